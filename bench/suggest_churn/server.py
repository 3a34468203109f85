# greeting server: writes a greeting, reads to EOF, closes (the client closes first)
import asyncio, sys
async def serve(r, w):
    try:
        w.write(b"hi\n"); await w.drain()
        while await r.read(4096): pass
    except Exception: pass
    w.close()
async def main():
    srv = await asyncio.start_server(serve, '127.0.0.1', int(sys.argv[1]), backlog=4096)
    open(sys.argv[2], 'w').write('ready')
    async with srv: await srv.serve_forever()
asyncio.run(main())
