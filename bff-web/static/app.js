// The web app: one ES module, no framework, no build step. Every call goes to the BFF on this
// origin with the session cookie and `X-CSRF: 1`; the page never sees a token.

const $ = (id) => document.getElementById(id);

/** A call to the BFF, as a cookie-authenticated client must make it. */
function api(path, options = {}) {
  return fetch(path, {
    ...options,
    credentials: 'same-origin',
    headers: { 'X-CSRF': '1', Accept: 'application/json', ...(options.headers || {}) },
  });
}

/** An element with text (never HTML: what the API returns is data, not markup). */
function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

const money = (amount, currency) =>
  new Intl.NumberFormat('en', { style: 'currency', currency: currency || 'EUR' }).format(amount);
const day = (iso) => new Date(iso).toLocaleDateString('en', { year: 'numeric', month: 'short', day: 'numeric' });

function show(section) {
  for (const id of ['loading', 'welcome', 'home']) $(id).hidden = id !== section;
}

function signedOut() {
  show('welcome');
  $('sign-in').hidden = false;
  $('sign-out').hidden = true;
  $('user-name').hidden = true;
}

function failed(message) {
  $('loading').hidden = true;
  $('error').textContent = message;
  $('error').hidden = false;
}

function setBadge(count) {
  const badge = $('badge');
  badge.textContent = String(count);
  badge.classList.toggle('zero', count === 0);
}

function renderOrders(orders, products) {
  const names = new Map((products || []).map((p) => [p.sku, p.name]));
  const list = $('orders');
  list.replaceChildren();
  for (const order of orders) {
    const item = el('li', null, 'order');
    const head = el('div', null, 'order-head');
    head.append(el('span', `Order #${order.id}`, 'order-id'), el('span', order.status, `status ${order.status}`));
    const meta = el('div', `${day(order.placedAt)} · ${money(order.total, order.currency)}`, 'muted');
    const lines = el('ul', null, 'lines');
    for (const line of order.items) {
      const row = el('li');
      row.append(
        el('span', names.get(line.sku) || line.sku, 'product'),
        el('span', `× ${line.quantity}`, 'qty'),
        el('span', money(line.unitPrice, order.currency), 'price'),
      );
      lines.append(row);
    }
    item.append(head, meta, lines);
    list.append(item);
  }
  if (orders.length === 0) list.append(el('li', 'No orders yet.', 'muted'));
}

function renderNotifications(notifications) {
  const list = $('notifications');
  list.replaceChildren();
  if (notifications === null) {
    list.append(el('li', 'Notifications are unavailable right now.', 'muted'));
    setBadge(0);
    return;
  }
  for (const n of notifications) {
    const item = el('li', null, n.read ? 'notification' : 'notification unread');
    item.append(el('span', n.title, 'title'), el('span', day(n.createdAt), 'muted'));
    list.append(item);
  }
  setBadge(notifications.filter((n) => !n.read).length);
}

async function markAllRead() {
  const button = $('mark-read');
  button.disabled = true;
  try {
    const response = await api('/web/notifications/read', { method: 'POST' });
    if (response.status === 401) return signedOut();
    if (!response.ok) return failed(`Could not mark your notifications read (${response.status}).`);
    const { unread } = await response.json();
    setBadge(unread);
    for (const item of document.querySelectorAll('.notification.unread')) item.classList.remove('unread');
  } finally {
    button.disabled = false;
  }
}

async function start() {
  $('mark-read').addEventListener('click', markAllRead);
  const user = await api('/bff/user');
  if (user.status === 401) return signedOut();
  if (!user.ok) return failed(`Cannot load your session (${user.status}).`);
  const me = await user.json();
  const home = await api('/web/home');
  if (home.status === 401) return signedOut();
  if (!home.ok) return failed(`Cannot load your account (${home.status}).`);
  const page = await home.json();
  const name = page.profile.displayName || me.name || `user ${me.sub}`;
  $('user-name').textContent = name;
  $('user-name').hidden = false;
  $('sign-in').hidden = true;
  $('sign-out').hidden = false;
  $('greeting').textContent = `Hello, ${name.split(' ')[0]}`;
  $('member').textContent = `Member since ${day(page.profile.memberSince)} · ${page.profile.tier} tier`;
  renderOrders(page.orders, page.products);
  renderNotifications(page.notifications);
  show('home');
}

start().catch((e) => failed(`Something went wrong: ${e.message}`));
