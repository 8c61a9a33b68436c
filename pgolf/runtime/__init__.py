"""What a process runs on: the device switch, the process group, and signals as stop requests."""
