// herder's preload for Node apps in cluster mode, added to NODE_OPTIONS (`--require`) by the
// daemon when an app has listening sockets. Nothing in the app changes:
//
// - `server.listen(port)` (any of its forms, http, https, net, express, fastify …) on one of
//   the app's ports listens on the socket the daemon passed instead (socket activation:
//   descriptors 3, 4 …, their ports in HERDER_LISTEN_PORTS), so every instance serves the
//   same port and the port outlives every instance;
// - the stop signal (SIGTERM or SIGINT), when the app has no handler of its own, stops
//   accepting, answers the requests under way with `Connection: close`, and lets the process
//   end by that signal once its connections are done.
'use strict';
(function herderCluster() {
  const env = process.env;
  // Set by herder for every process of the app: `npm start` or a script with a node shebang
  // runs the server in a child, which inherits the sockets and this preload.
  const ports = String(env.HERDER_LISTEN_PORTS || '').split(':').map(Number);
  const fs = require('fs');
  const fdOf = new Map();
  ports.forEach((port, i) => {
    const fd = 3 + i;
    let socket = false;
    try {
      socket = fs.fstatSync(fd).isSocket();
    } catch (_) {}
    if (port > 0 && socket && !fdOf.has(port)) fdOf.set(port, fd);
  });
  if (!fdOf.size) return;

  const net = require('net');
  const servers = new Set();
  let stopping = false;

  // The port a listen() call asks for; `undefined` for a path, a pipe or a handle.
  function portOf(args) {
    const first = args[0];
    if (first !== null && typeof first === 'object') {
      if (first._handle || first.fd !== undefined || first.path !== undefined) return undefined;
      return Number(first.port || 0);
    }
    if (typeof first === 'number') return first;
    if (typeof first === 'string') return /^\d+$/.test(first) ? Number(first) : undefined;
    return 0;
  }

  const listen = net.Server.prototype.listen;
  net.Server.prototype.listen = function herderListen(...args) {
    const port = portOf(args);
    const fd = port ? fdOf.get(port) : undefined;
    if (fd === undefined) {
      if (port) {
        process.emitWarning(
          `listen(${port}) is not on a port of this app (${[...fdOf.keys()].join(', ')}): ` +
            'this instance binds it itself; give the app `port = ' + port + '` in herder',
          'HerderWarning',
        );
      }
      return listen.apply(this, args);
    }
    const callback = args.find((a) => typeof a === 'function');
    const options = args[0] !== null && typeof args[0] === 'object' ? args[0] : {};
    if (!servers.size && !stopping) {
      // Only a process that serves on the app's sockets stops gracefully on their behalf.
      process.on('SIGTERM', onTerm);
      process.on('SIGINT', onInt);
    }
    servers.add(this);
    this.once('close', () => servers.delete(this));
    // Requests answered while stopping close their connection: the client opens its next one
    // on an instance that stays.
    this.prependListener('request', (req, res) => {
      if (stopping && !res.headersSent) res.setHeader('Connection', 'close');
    });
    return listen.call(this, { fd, backlog: options.backlog }, callback);
  };

  function stop(signal) {
    // An app that handles the signal itself decides, as it does without herder.
    if (process.listenerCount(signal) > 1) return;
    stopping = true;
    process.removeListener('SIGTERM', onTerm);
    process.removeListener('SIGINT', onInt);
    const done = () => process.kill(process.pid, signal);
    let open = servers.size;
    if (!open) return done();
    // Idle keep-alive connections that send nothing more are closed after a moment.
    setTimeout(() => {
      for (const server of servers) if (typeof server.closeIdleConnections === 'function') server.closeIdleConnections();
    }, 1000).unref();
    for (const server of servers) {
      // The base close: stop accepting and wait for the connections, without cutting idle
      // keep-alive connections in the middle of a request the client may be sending.
      net.Server.prototype.close.call(server, () => {
        open -= 1;
        if (open === 0) done();
      });
    }
  }
  function onTerm() {
    stop('SIGTERM');
  }
  function onInt() {
    stop('SIGINT');
  }
})();
