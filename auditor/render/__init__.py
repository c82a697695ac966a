"""Renderers: a `Report` in, a string out. They never compute and never read the host."""
