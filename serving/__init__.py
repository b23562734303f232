"""Serving a local TorchServe: settings.py (addresses, ports, queue), config.py (config.properties),
server.py (the lifecycle: `with running(...) as server`), launcher.py (its command line),
management.py (management API client, stdlib only), processes.py (psutil), logs.py and log4j2.xml."""
