"""Images: a daemonless, reproducible OCI baker and the local image store.

`bake(project)` is the entry point; `ImageStore` is the `.herd/images` OCI layout.
"""
