include $(sort $(wildcard $(BR2_EXTERNAL_EDGE_AGENT_PATH)/package/*/*.mk))
