"""The monitor API tokens the integration tests configure: one per role, and the headers that send them."""

TOKENS = "ada:admin:admin-token,otto:operator:op-token,vic:viewer:viewer-token"
ADMIN = {"Authorization": "Bearer admin-token"}
OPERATOR = {"Authorization": "Bearer op-token"}
VIEWER = {"Authorization": "Bearer viewer-token"}
