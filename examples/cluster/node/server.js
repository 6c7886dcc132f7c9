// An ordinary Node server, unchanged for herder's cluster mode: herder's preload makes its
// `listen(PORT)` serve on the socket every instance shares.
const http = require('http');

const port = Number(process.env.PORT || 3000);
const server = http.createServer((req, res) => {
  res.setHeader('Content-Type', 'text/plain');
  res.end(`hello from pid ${process.pid} (instance ${process.env.NODE_APP_INSTANCE})\n`);
});
server.listen(port, () => {
  // With `wait_ready`, herder waits for this before the instance counts as ready.
  if (process.send) process.send('ready');
});
