"""Exports of a release to other engines: Kubernetes manifests (`herd export kubernetes`).

`kubernetes` and `pod` build the manifests purely from a release and the spec; `gaps` says what
of a herd.toml has no Kubernetes equivalent; `source` reads the release, the images' users and
checks the registry; `files` renders YAML and writes the directory with its `apply.sh`.
"""
