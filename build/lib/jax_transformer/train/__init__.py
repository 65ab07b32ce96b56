"""The one training engine: optimizer factory, jitted steps over the device mesh (with gradient accumulation), the
loop, checkpoints, sharding and logging. It never knows which task it trains."""
