import asyncio, sys, aiohttp
async def one(session, i, u):
    try:
        async with session.get(u, timeout=aiohttp.ClientTimeout(total=10)) as r:
            return "%d %s" % (i, " ".join((await r.text()).split()))
    except Exception as e:
        return "%d ERR %r" % (i, e)
async def main():
    async with aiohttp.ClientSession() as s:
        print("\n".join(await asyncio.gather(*[one(s, i, u) for i, u in enumerate(sys.argv[1:])])))
asyncio.run(main())
