"""Reading captures: the pcap and pcapng formats, the packets table and its schema, the tshark engine."""
