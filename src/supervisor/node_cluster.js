// herder's preload for Node apps in cluster mode, added to NODE_OPTIONS (`--require`) by the
// daemon when an app has listening sockets. Nothing in the app changes:
//
// - `server.listen(port)` (any of its forms, http, https, net, express, fastify …) on one of
//   the app's ports listens on the socket the daemon passed instead (socket activation:
//   descriptors 3, 4 …, their ports in HERDER_LISTEN_PORTS), so every instance serves the
//   same port and the port outlives every instance;
// - on another port (one the app was not given), when herder set HERDER_LISTEN_ASK and an IPC
//   channel: it asks the daemon for that port over the channel, and listens on the socket the
//   daemon sends back (bound once for every instance, as the app's own ports are); if the
//   daemon cannot share it, the app binds it itself, as without herder;
// - behind herder's http balancer (HERDER_HOP_PORT, the instance's loopback port): a server
//   that listens on that port serves the instance's hop too, the abstract Unix socket
//   `herder-hop-<port>` the balancer reaches it on at less cost than loopback TCP; its
//   connections look to the app as loopback ones do, and close with the server;
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
  // Only for the process herder started: a process this one starts may have an IPC channel
  // too, but to this one, not to herder.
  const ask = env.HERDER_LISTEN_ASK === '1' && typeof process.send === 'function';
  delete env.HERDER_LISTEN_ASK;
  const hopPort = Number(env.HERDER_HOP_PORT) || 0;
  if (!fdOf.size && !ask && !hopPort) return;

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

  // The host a listen() call asks for, if any.
  function hostOf(args) {
    const first = args[0];
    if (first !== null && typeof first === 'object') return first.host || undefined;
    return typeof args[1] === 'string' ? args[1] : undefined;
  }

  const listen = net.Server.prototype.listen;
  net.Server.prototype.listen = function herderListen(...args) {
    const port = portOf(args);
    const fd = port ? fdOf.get(port) : undefined;
    const callback = args.find((a) => typeof a === 'function');
    const options = args[0] !== null && typeof args[0] === 'object' ? args[0] : {};
    if (fd !== undefined) return serve(this, { fd, backlog: options.backlog }, callback);
    if (port && port === hopPort) {
      const result = listen.apply(this, args);
      hop(this);
      return result;
    }
    const host = hostOf(args);
    if (port && ask && (host === undefined || net.isIP(host))) {
      askFor(this, port, host, args, callback);
      return this;
    }
    if (port) {
      const given = fdOf.size ? ` (${[...fdOf.keys()].join(', ')})` : '';
      process.emitWarning(
        `listen(${port}${host ? ', ' + JSON.stringify(host) : ''}) is not on a port of this app${given}: ` +
          'this instance binds it itself; give the app `port = ' + port + '` in herder',
        'HerderWarning',
      );
    }
    return listen.apply(this, args);
  };

  function serve(server, target, callback) {
    if (!servers.size && !stopping) {
      // Only a process that serves on the app's sockets stops gracefully on their behalf.
      process.on('SIGTERM', onTerm);
      process.on('SIGINT', onInt);
    }
    servers.add(server);
    server.once('close', () => servers.delete(server));
    // Requests answered while stopping close their connection: the client opens its next one
    // on an instance that stays.
    server.prependListener('request', (req, res) => {
      if (stopping && !res.headersSent) res.setHeader('Connection', 'close');
    });
    return listen.call(server, target, callback);
  }

  // The hop of a server on the instance's loopback port: once the port listens, the same
  // server takes the connections of `herder-hop-<port>` too. If that socket cannot be opened
  // (an older Node, the name taken), the balancer uses the port.
  const hopped = new WeakSet();
  function hop(server) {
    if (hopped.has(server)) return;
    hopped.add(server);
    const open = () => {
      const unix = net.createServer((socket) => {
        // As the server's own connections: refused past its `maxConnections`, and counted, so
        // that its close waits for them as for the others.
        if (server.maxConnections && server._connections >= server.maxConnections) {
          socket.destroy();
          return;
        }
        for (const [key, value] of [
          ['remoteAddress', '127.0.0.1'],
          ['remoteFamily', 'IPv4'],
          ['localAddress', '127.0.0.1'],
          ['localPort', hopPort],
        ]) {
          Object.defineProperty(socket, key, { value, configurable: true });
        }
        server._connections += 1;
        socket.once('close', () => {
          server._connections -= 1;
          if (typeof server._emitCloseIfDrained === 'function') server._emitCloseIfDrained();
        });
        server.emit('connection', socket);
      });
      unix.on('error', () => {});
      unix.unref();
      listen.call(unix, '\0herder-hop-' + hopPort);
      // Closed with the server, by its `close` or (a close that went around it, such as
      // net.Server.prototype.close) once it has closed; a server that listens again on the
      // port serves a new one.
      const own = Object.prototype.hasOwnProperty.call(server, 'close');
      const close = server.close;
      let shut = false;
      const closeHop = () => {
        if (shut) return;
        shut = true;
        if (server.close === herderClose) {
          if (own) server.close = close;
          else delete server.close;
        }
        server.removeListener('close', closeHop);
        hopped.delete(server);
        unix.close();
      };
      function herderClose(...args) {
        closeHop();
        return close.apply(this, args);
      }
      server.close = herderClose;
      server.once('close', closeHop);
    };
    if (server.listening) open();
    else server.once('listening', open);
  }

  // Listen requests waiting for the daemon's answer, by port, in the order they were sent
  // (the daemon answers them in that order).
  const waiting = new Map();
  let asked = 0;

  function askFor(server, port, host, args, callback) {
    const entry = { server, args, callback, timer: null };
    if (!waiting.has(port)) waiting.set(port, []);
    waiting.get(port).push(entry);
    // The channel keeps the process alive while an answer is due.
    if (asked++ === 0 && process.channel) process.channel.ref();
    entry.timer = setTimeout(() => answered(port, entry, null, 'herder did not answer within 5 s'), 5000);
    process.send({ cmd: 'NODE_HERDER_LISTEN', port, host: host === undefined ? null : host }, (err) => {
      if (err) answered(port, entry, null, err.message);
    });
  }

  function answered(port, entry, handle, error) {
    const queue = waiting.get(port) || [];
    const at = queue.indexOf(entry);
    if (at < 0) return;
    queue.splice(at, 1);
    clearTimeout(entry.timer);
    if (--asked === 0 && process.channel &&
        process.listenerCount('message') + process.listenerCount('disconnect') === 0) {
      process.channel.unref();
    }
    if (handle) return serve(entry.server, handle, entry.callback);
    process.emitWarning(
      `listen(${port}) is not shared by herder (${error}): this instance binds it itself`,
      'HerderWarning',
    );
    listen.apply(entry.server, entry.args);
  }

  if (ask) {
    process.on('internalMessage', (msg, handle) => {
      if (!msg || msg.cmd !== 'NODE_HERDER_LISTEN') return;
      const queue = waiting.get(msg.port);
      if (queue && queue.length) answered(msg.port, queue[0], msg.error ? null : handle, msg.error || 'no socket');
    });
  }

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
