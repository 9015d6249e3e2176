"""See inside a network while it trains: hooks attached from outside, statistics on the device."""
