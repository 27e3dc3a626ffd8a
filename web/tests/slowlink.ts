// A slow link between the browser and the server: a TCP proxy on
// 127.0.0.1:0 that holds every byte for `delayMs` in each direction and
// hands it on in small pieces, as a congested mobile link does. Order is
// kept; backpressure is kept (a full socket pauses its source).

import { type AddressInfo, type Server as NetServer, type Socket, connect, createServer } from "node:net";

export class SlowLink {
  private constructor(
    private readonly server: NetServer,
    private readonly sockets: Set<Socket>,
    readonly url: string,
  ) {}

  /** Proxies to `target` (http://host:port) with `delayMs` each way. */
  static async start(target: string, delayMs: number, pieceBytes = 256): Promise<SlowLink> {
    const { hostname, port } = new URL(target);
    const sockets = new Set<Socket>();
    const server = createServer((client) => {
      const upstream = connect(Number(port), hostname);
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on("close", () => sockets.delete(s));
        s.on("error", () => {
          client.destroy();
          upstream.destroy();
        });
      }
      pipeSlowly(client, upstream, delayMs, pieceBytes);
      pipeSlowly(upstream, client, delayMs, pieceBytes);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", resolve);
    });
    const address = server.address() as AddressInfo;
    return new SlowLink(server, sockets, `http://127.0.0.1:${address.port}`);
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Copies `from` to `to`, each chunk after `delayMs`, cut in pieces. */
function pipeSlowly(from: Socket, to: Socket, delayMs: number, pieceBytes: number): void {
  // Chunks leave in arrival order: one timer per chunk, all the same delay.
  let inFlight = 0;
  from.on("data", (chunk: Buffer) => {
    inFlight += chunk.length;
    if (inFlight > 1 << 20) from.pause();
    setTimeout(() => {
      for (let at = 0; at < chunk.length; at += pieceBytes) {
        if (!to.destroyed) to.write(chunk.subarray(at, at + pieceBytes));
      }
      inFlight -= chunk.length;
      if (inFlight <= 1 << 20 && to.writableLength < 1 << 20) from.resume();
    }, delayMs);
  });
  from.on("end", () => setTimeout(() => to.end(), delayMs));
}
