// The socket.io peer of the benchmark (docs/PERFORMANCE.md): socket.io on Node's HTTP
// server, long-polling only, on 127.0.0.1 (PORT, default 3001). Two events on the
// namespace "/", as in the socketioxide peer (../rust/src/bin/sioxide-server.rs): "echo"
// answers the sender alone, "broadcast" reaches every socket, the sender's own included.
'use strict';
const http = require('http');
const { Server } = require('socket.io');

const port = Number(process.env.PORT || 3001);
const server = http.createServer();
// Polling only, and no client bundle to serve: the clients are the benchmark's load tool.
const io = new Server(server, { transports: ['polling'], serveClient: false });

io.on('connection', (socket) => {
  socket.on('echo', (data) => socket.emit('echo', data));
  socket.on('broadcast', (data) => io.emit('broadcast', data));
});

server.listen(port, '127.0.0.1', () => {
  const version = require('socket.io/package.json').version;
  console.log(`socket.io ${version} peer (polling only) on 127.0.0.1:${port}, pid ${process.pid}`);
});

// The benchmark stops a peer with SIGTERM; end at once, as the Rust servers do.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => process.exit(0));
}
