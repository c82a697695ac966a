"""Collectors: read the host once into a typed `Facts` snapshot. They never judge."""
