from armserver.plugin import arm, arm_server

__all__ = ["arm", "arm_server"]
