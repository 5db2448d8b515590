"""Limen: an open-source Session Border Controller and teleworker gateway."""

__version__ = "0.1.0"
