# SCRATCH, not committed
import asyncio, json, time, statistics
import aiohttp
import pytest
from test_invocation import deploy  # noqa
pytestmark = pytest.mark.usefixtures("use_platform")

def test_latency(platform):
    deploy(platform, "behaviours.py")
    async def main():
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {platform.token}"}) as s:
            url = platform.gateway_url + "/v1/functions/behaviours/square/calls?wait=30"
            for _ in range(50):
                async with s.post(url, json={"args": [3]}) as r:
                    assert (await r.json())["value"] == 9
            lat = []
            for _ in range(1000):
                t = time.perf_counter()
                async with s.post(url, json={"args": [3]}) as r:
                    await r.read()
                lat.append((time.perf_counter() - t) * 1000)
            lat.sort()
            print(f"WARM RT ms p50={lat[500]:.2f} p90={lat[900]:.2f} p99={lat[990]:.2f}")
    asyncio.run(main())
