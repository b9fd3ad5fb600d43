"""The chaos harness's TCP proxy (asyncio, in a thread of the orchestrator).

Clients talk to the sequencer only through it, so the sequencer can be killed
and restarted on its own port while clients keep one address, and the network
between them can fail:

- cut():        close every open connection, both ways, at once
- stall(True):  stop forwarding in both directions (bytes wait, connections stay open)
- delay(s):     forward every chunk s seconds late
- blackhole():  swallow what the sequencer sends (answers are lost after the
                sequencer acted on the requests); heal() then cuts those connections
"""
import asyncio
import threading


class Proxy:
    def __init__(self, listen_port, upstream_port):
        self.listen_port = listen_port
        self.upstream_port = upstream_port
        self.loop = asyncio.new_event_loop()
        self.conns = set()  # (client_writer, upstream_writer)
        self.delay_s = 0.0
        self.dropping = False
        self.flowing = None  # asyncio.Event, set while not stalled
        self.accepted = 0
        self.dropped_bytes = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait()

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", self.listen_port, reuse_address=True))
        ready.set()
        self.loop.run_forever()

    async def _accept(self, reader, writer):
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        pair = (writer, up_writer)
        self.conns.add(pair)
        try:
            await asyncio.gather(self._pump(reader, up_writer, False), self._pump(up_reader, writer, True),
                                 return_exceptions=True)
        finally:
            self.conns.discard(pair)
            for w in pair:
                w.close()

    async def _pump(self, reader, writer, downstream):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await self.flowing.wait()
                if self.delay_s > 0:
                    await asyncio.sleep(self.delay_s)
                    await self.flowing.wait()
                if downstream and self.dropping:
                    self.dropped_bytes += len(data)
                    continue
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    def _call(self, fn):
        """Runs fn on the proxy's loop and returns its result."""
        done = threading.Event()
        box = []

        def wrapper():
            box.append(fn())
            done.set()
        self.loop.call_soon_threadsafe(wrapper)
        done.wait(5)
        return box[0] if box else None

    def _cut(self):
        n = len(self.conns)
        for client, upstream in list(self.conns):
            for w in (client, upstream):
                transport = w.transport
                if transport is not None:
                    transport.abort()
        return n

    def cut(self):
        """Closes every connection; returns how many there were."""
        return self._call(self._cut)

    def stall(self, on):
        def f():
            if on:
                self.flowing.clear()
            else:
                self.flowing.set()
            return len(self.conns)
        return self._call(f)

    def delay(self, seconds):
        def f():
            self.delay_s = seconds
            return len(self.conns)
        return self._call(f)

    def blackhole(self):
        def f():
            self.dropping = True
            self.dropped_bytes = 0
            return len(self.conns)
        return self._call(f)

    def heal(self):
        """Back to normal; connections that lost bytes are cut. Returns bytes dropped."""
        def f():
            dropped = self.dropped_bytes if self.dropping else 0
            if self.dropping:
                self._cut()
            self.dropping = False
            self.delay_s = 0.0
            self.flowing.set()
            return dropped
        return self._call(f)

    def close(self):
        def f():
            self.server.close()
            self._cut()
        self._call(f)
        self.loop.call_soon_threadsafe(self.loop.stop)
