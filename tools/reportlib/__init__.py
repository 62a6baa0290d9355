"""Parts of tools/report.py: site time, driver labels, session/CDR exports and the plots."""
