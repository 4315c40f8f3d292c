"""Rendering results: text tables, JSON, CSV and the HTML report."""
