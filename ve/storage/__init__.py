"""Storage for VEs: OS template caches and their safe extraction."""

from .templates import (TemplateMeta, build_busybox, cache_path, import_tarball,
                        list_templates, metadata, unpack)

__all__ = ["TemplateMeta", "build_busybox", "cache_path", "import_tarball",
           "list_templates", "metadata", "unpack"]
