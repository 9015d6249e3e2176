"""Runs seen together: finding them on disk, and what a sweep of them shows."""
