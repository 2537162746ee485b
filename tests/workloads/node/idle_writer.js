// node --perf-basic-prof --interpreted-frames-native-stack idle_writer.js
// HOST PORT: a pooled connection used again after a long silence. Connects
// (net.connect in holdIdleConnection, no keepalive), prints "connected
// LOCAL_ADDR:LOCAL_PORT" and sends nothing until a line "write" comes on
// stdin; then writes a few bytes (writeAfterSilence). When the connection
// ends on the peer's reset (ECONNRESET) it prints "reset" and "done", then
// stays alive until its stdin closes (the tracer symbolizes stacks while it
// lives) and exits 0. Any other end is said on stderr and exits 1.
'use strict';
const net = require('net');
const readline = require('readline');

const [host, portText] = process.argv.slice(2);
if (portText === undefined) {
  console.error('usage: node idle_writer.js HOST PORT');
  process.exit(2);
}
const port = Number(portText);

function fail(what) {
  console.error(`node idle_writer: ${what}`);
  process.exit(1);
}

function holdIdleConnection(onConnected) {
  const socket = net.connect({ host, port, keepAlive: false });
  socket.setTimeout(0);
  socket.on('connect', () => onConnected(socket));
  socket.on('data', (chunk) => fail(`unexpected data from the peer: ${chunk.length} bytes`));
  socket.on('end', () => fail('the peer closed (FIN), expected a reset'));
  socket.on('error', (err) => {
    if (err.code !== 'ECONNRESET') {
      fail(`${err.code}: ${err.message}, expected ECONNRESET`);
    }
    console.log('reset');
    lingerUntilStdinCloses();
  });
}

function writeAfterSilence(socket) {
  socket.write('...');
}

function lingerUntilStdinCloses() {
  console.log('done');
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('close', () => process.exit(0));
  process.stdin.resume();
}

holdIdleConnection((socket) => {
  console.log(`connected ${socket.localAddress}:${socket.localPort}`);
  const lines = readline.createInterface({ input: process.stdin });
  lines.once('line', (line) => {
    lines.close();
    if (line.trim() !== 'write') {
      fail(`expected "write" on stdin, got ${JSON.stringify(line)}`);
    }
    writeAfterSilence(socket);
  });
});
