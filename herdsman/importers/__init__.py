"""Ways into herdsman from other tools' files (today: docker compose), as pure translations.

An importer turns another tool's description into herd.toml text plus the list of what has no
equivalent. It reads no file and touches no state itself: the facade hands it the text and a
reader for the few files the input refers to (env files, Dockerfiles), so the translation can be
tested byte for byte against golden files. It imports only `spec` and `errors`.
"""
