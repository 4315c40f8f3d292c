"""synlens capture agent: jittered TCP SYN probes, every probe and reply written to a nanosecond pcap.

Importing this package (or any module in it) does nothing: no sockets, no signal handlers, no threads.
All work starts in `agent.cli.main`. See agent/README.md for privileges and usage.
"""
