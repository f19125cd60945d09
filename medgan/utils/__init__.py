"""Small helpers shared by every stage: atomic output, hashing, device selection."""

from medgan.utils.atomic import atomic_directory, atomic_path, sha256_file

__all__ = ["atomic_directory", "atomic_path", "sha256_file"]
