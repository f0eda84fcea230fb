"""Resolver state: the CDN sync loop, state files, the on-disk cache and AES-GCM."""
