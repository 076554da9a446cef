"""The admin dashboard: server-rendered pages whose live parts refresh in place."""
