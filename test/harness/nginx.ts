/**
 * Starts a REAL nginx (Debian's) on loopback, on a free port, in a temporary
 * prefix, in front of several server nodes: round robin, WebSocket proxying
 * (`Upgrade`/`Connection`), as docs/deploy.md configures it. Runs in the
 * foreground (`daemon off`) as a child of the test, stopped afterwards.
 *
 * ```ts
 * const lb = await startNginx([n1.url, n2.url, n3.url]);
 * // lb.url = 'http://127.0.0.1:41234', lb.wsUrl = 'ws://127.0.0.1:41234/v1/signal'
 * await lb.stop();
 * ```
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { freeTcpPort, LOOPBACK } from './ports';
import { makeTempDir, removeTempDir, startChild, waitFor } from './process';

const NGINX = '/usr/sbin/nginx';

/** A running nginx, see {@link startNginx}. */
export interface RunningNginx {
  readonly url: string;
  readonly wsUrl: string;
  /** Stops nginx and removes its prefix. Idempotent. */
  stop(): Promise<void>;
}

/**
 * @param upstreams base URLs of the nodes, e.g. `http://127.0.0.1:41000`.
 * @throws Error (with its error log) when nginx is missing or does not listen within 10 s.
 */
export async function startNginx(upstreams: readonly string[]): Promise<RunningNginx> {
  if (!existsSync(NGINX)) throw new Error(`${NGINX} is missing: apt-get install nginx (scripts/setup.sh does)`);
  const dir = makeTempDir('nginx');
  for (const d of ['logs', 'tmp']) mkdirSync(join(dir, d));
  const port = await freeTcpPort();
  const servers = upstreams.map((u) => `    server ${new URL(u).host};`).join('\n');
  const asRoot = process.getuid?.() === 0;
  const conf = `${asRoot ? 'user root;\n' : ''}worker_processes 1;
error_log ${dir}/logs/error.log warn;
pid ${dir}/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  upstream parley {
${servers}
  }
  map $http_upgrade $connection_upgrade { default upgrade; '' close; }
  server {
    listen ${LOOPBACK}:${port};
    location / {
      proxy_pass http://parley;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_read_timeout 75s;
      proxy_next_upstream error timeout http_503;
      proxy_connect_timeout 1s;
    }
  }
}
`;
  const confPath = join(dir, 'nginx.conf');
  writeFileSync(confPath, conf);
  const child = await startChild(NGINX, ['-p', dir, '-c', confPath, '-g', 'daemon off;'], {
    cwd: dir,
    stdio: 'ignore',
  });
  const stop = async () => {
    await child.stop('SIGQUIT', 3000);
    removeTempDir(dir);
  };
  try {
    await waitFor(
      `nginx on ${LOOPBACK}:${port}`,
      () =>
        new Promise<boolean>((resolve, reject) => {
          if (child.hasExited()) return reject(new Error('nginx exited'));
          const s = connect(port, LOOPBACK);
          s.once('connect', () => {
            s.end();
            resolve(true);
          });
          s.once('error', () => resolve(false));
        }),
      10_000,
      50,
    );
  } catch (e) {
    const logPath = join(dir, 'logs', 'error.log');
    const log = existsSync(logPath) ? readFileSync(logPath, 'utf8').slice(-2000) : '';
    await stop();
    throw new Error(`${(e as Error).message}\nnginx error log:\n${log}`, { cause: e });
  }
  let stopped = false;
  return {
    url: `http://${LOOPBACK}:${port}`,
    wsUrl: `ws://${LOOPBACK}:${port}/v1/signal`,
    async stop() {
      if (stopped) return;
      stopped = true;
      await stop();
    },
  };
}
