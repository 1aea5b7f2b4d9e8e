"""The fault suite: real nats-servers and real worker processes meeting the faults an operator meets."""
