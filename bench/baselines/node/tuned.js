// The seed's /mobile/home at Node's best: plain http server, one undici Pool per upstream with
// keep-alive, no Express. Same payload, same upstream calls, no JWT work.
const http = require('node:http');
const { Pool } = require('undici');

const { USERS, ORDERS, NOTIFS, PORT } = process.env;
const pool = (url) => new Pool(url, { connections: 128, pipelining: 1, keepAliveTimeout: 60_000 });
const users = pool(USERS);
const orders = pool(ORDERS);
const notifs = pool(NOTIFS);

async function getJson(p, path) {
  const { statusCode, body } = await p.request({ path, method: 'GET' });
  if (statusCode !== 200) {
    await body.dump();
    throw new Error(`upstream answered ${statusCode}`);
  }
  return body.json();
}

const server = http.createServer(async (req, res) => {
  if (req.url !== '/mobile/home') {
    res.writeHead(404).end();
    return;
  }
  const userId = '42';
  try {
    const [profile, recent, unread] = await Promise.all([
      getJson(users, `/users/${userId}`),
      getJson(orders, `/orders?user=${userId}&limit=3`),
      getJson(notifs, `/unread-count/${userId}`),
    ]);
    const body = JSON.stringify({
      name: profile.displayName,
      recentOrders: recent.map((o) => ({ id: o.id, total: o.total })),
      badge: unread.count,
    });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  } catch (e) {
    res.writeHead(502).end();
  }
});
server.keepAliveTimeout = 60_000;
server.listen(Number(PORT), '127.0.0.1', () => console.log(`tuned BFF listening on ${PORT}`));
