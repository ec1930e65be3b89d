"""Workflows join the pieces along the data flow: store -> heads -> saved heads and reports."""
