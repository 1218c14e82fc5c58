// The seed's /mobile/home, as written in ../shared/seed/api-gateway.txt: Express, global fetch,
// Promise.all. Upstream base URLs come from the environment; the seed's `req.auth` ("already
// verified at the gateway") is the demo user, so this baseline does no JWT work at all.
const express = require('express');

const { USERS, ORDERS, NOTIFS, PORT } = process.env;
const app = express();

app.use((req, _res, next) => {
  req.auth = { userId: '42' };
  next();
});

// Mobile home screen needs profile + recent orders + unread count.
// One client call → three parallel internal calls → one trimmed payload.
app.get('/mobile/home', async (req, res) => {
  const { userId } = req.auth; // already verified at the gateway

  const [profile, orders, unread] = await Promise.all([
    fetch(`${USERS}/users/${userId}`).then((r) => r.json()),
    fetch(`${ORDERS}/orders?user=${userId}&limit=3`).then((r) => r.json()),
    fetch(`${NOTIFS}/unread-count/${userId}`).then((r) => r.json()),
  ]);

  // Shape it for mobile: small, flat, exactly what this screen renders.
  res.json({
    name: profile.displayName,
    recentOrders: orders.map((o) => ({ id: o.id, total: o.total })),
    badge: unread.count,
  });
});

app.listen(Number(PORT), '127.0.0.1', () => console.log(`seed BFF listening on ${PORT}`));
