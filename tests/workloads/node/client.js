// node --perf-basic-prof client.js HOST PORT N: a client that connects per
// request (net.connect in nodeConnectPerRequest), sends one HTTP request,
// and closes first (socket.destroy() in nodeCloseAfterReply) once the reply
// has arrived; one request after the other. Prints "done", then stays alive
// until its stdin closes (the tracer symbolizes stacks while it lives).
'use strict';
const net = require('net');

const [host, portText, countText] = process.argv.slice(2);
if (countText === undefined) {
  console.error('usage: node client.js HOST PORT N');
  process.exit(2);
}
const port = Number(portText);
let left = Number(countText);

function nodeCloseAfterReply(socket) {
  socket.destroy();
}

function nodeConnectPerRequest(onDone) {
  const socket = net.connect(port, host);
  let got = '';
  socket.on('connect', () => socket.write('GET / HTTP/1.1\r\nHost: tcptrace\r\n\r\n'));
  socket.on('data', (chunk) => {
    got += chunk.toString('latin1');
    if (got.endsWith('\r\n\r\nok\n')) {
      nodeCloseAfterReply(socket);
      onDone();
    }
  });
  socket.on('error', (err) => {
    console.error('node client:', err.message);
    process.exit(1);
  });
}

function next() {
  if (left === 0) {
    console.log('done');
    process.stdin.on('end', () => process.exit(0));
    process.stdin.resume();
    return;
  }
  left -= 1;
  nodeConnectPerRequest(next);
}

next();
