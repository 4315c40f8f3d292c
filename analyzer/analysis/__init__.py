"""Analysis of the packets table: matching, statistics and families, signals, scans, stages, fingerprints, hosts."""
