"""Data sources: synthetic music videos, YouTube-8M and MovieClips manifests."""
