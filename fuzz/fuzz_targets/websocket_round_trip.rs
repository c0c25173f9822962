#![no_main]

edge_agent_fuzz::target!(edge_agent_fuzz::fuzzing::websocket_round_trip);
