// PM2's cluster mode, as a typical deployment guide writes it: herder runs it unchanged.
module.exports = {
  apps: [
    {
      name: 'api',
      script: './server.js',
      instances: 3,
      exec_mode: 'cluster',
      max_memory_restart: '500M',
      env: { NODE_ENV: 'development', PORT: 3000 },
      env_production: { NODE_ENV: 'production', PORT: 3000 },
    },
  ],
};
