"""Reports people can look at: PNG plots and self-contained HTML pages built from workflow reports."""
