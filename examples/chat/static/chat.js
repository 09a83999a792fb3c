// The chat page. Every piece of user text (names, messages) goes into the
// page with textContent, never as HTML, so "<img src=x onerror=...>" is shown
// as the characters it is.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const LIMITS = { Name: 32, Message: 500 };
  const TYPING_EVERY_MS = 1500; // one client-typing event at most this often (the node allows 10/s)
  const TYPING_SHOWN_MS = 3000; // how long "X is typing..." stays without a new event

  let config = null; // GET /session: {user, pusher: {key, wsHost, wsPort}, rooms}
  let pusher = null;
  let channel = null;
  let room = null;
  let everConnected = false;
  let connectionState = "initialized";
  let reason = ""; // why the node refused or closed the connection, until the next connect
  let lastTypingSent = 0;
  let sending = Promise.resolve(); // the last POST /messages: the next waits for it
  const typing = new Map(); // user id -> timer that clears the indicator
  let seen = new Set(); // message ids shown in this room (history and live events overlap)

  // --- checks: the same as examples/chat/checks.py (the server checks again) ---

  function check(value, what) {
    const text = value.trim();
    if (!text) return [null, `${what} is empty`];
    if (typeof text.isWellFormed === "function" && !text.isWellFormed()) return [null, `${what} is not valid Unicode`];
    if ([...text].length > LIMITS[what]) return [null, `${what} is longer than ${LIMITS[what]} characters`];
    if (/[\u0000-\u001f\u007f-\u009f]/.test(text)) return [null, `${what} holds a control character`];
    if (what === "Name" && /[\u202a-\u202e\u2066-\u2069]/.test(text)) return [null, `${what} holds a control character`];
    return [text, null];
  }

  async function api(method, path, body) {
    const options = { method, credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, options);
    } catch {
      // fetch says only "Failed to fetch": say what it means here.
      throw new Error("the chat server cannot be reached (is python -m examples.chat still running?)");
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
    return data;
  }

  // --- joining ---

  // Asked at once; the handlers below are in place before it answers, so an
  // early Enter never submits the form the browser's way (a page reload).
  const ready = api("GET", "/session").then((answer) => (config = answer));

  function start() {
    $("join-form").addEventListener("submit", onJoin);
    $("send-form").addEventListener("submit", onSend);
    $("text").addEventListener("input", onTyping);
    $("rename").addEventListener("click", rename);
    window.addEventListener("hashchange", () => pusher && switchRoom(roomFromHash()));
    // Close the socket when the page goes away, so the others see us leave at once.
    window.addEventListener("pagehide", () => pusher && pusher.disconnect());
    return ready.then(() => (config.user ? enter(config.user) : $("name").focus()));
  }

  async function onJoin(event) {
    event.preventDefault();
    const [name, reason] = check($("name").value, "Name");
    if (reason) return void ($("join-error").textContent = reason);
    try {
      await ready;
      const answer = await api("POST", "/session", { name });
      $("join-error").textContent = "";
      enter(answer.user);
    } catch (error) {
      $("join-error").textContent = error.message;
    }
  }

  async function rename() {
    if (pusher) pusher.disconnect();
    await api("POST", "/logout", {});
    location.reload();
  }

  function enter(user) {
    if (pusher) return; // already in (a cookie and an early Enter can both get here)
    $("join").hidden = true;
    $("chat").hidden = false;
    $("rename").hidden = false;
    $("me").textContent = `you are ${user.name}`;
    renderRooms();
    connect();
    switchRoom(roomFromHash());
    $("text").focus();
  }

  function connect() {
    const secure = location.protocol === "https:";
    pusher = new Pusher(config.pusher.key, {
      wsHost: config.pusher.wsHost || location.hostname,
      wsPort: config.pusher.wsPort,
      wssPort: config.pusher.wsPort,
      forceTLS: secure,
      enabledTransports: secure ? ["wss"] : ["ws"],
      cluster: "local", // pusher-js insists on one; wsHost decides where it connects
      channelAuthorization: { endpoint: "/pusher/auth", transport: "ajax" },
      userAuthentication: { endpoint: "/pusher/user-auth", transport: "ajax" },
    });
    pusher.connection.bind("state_change", ({ current }) => showState(current));
    // Why the node refused or dropped us (pusher:error, or the close code's reason): shown until we connect.
    pusher.connection.bind("error", (error) => {
      // While connecting, pusher-js wraps the node's error: {type: "WebSocketError", error: {type: "PusherError", ...}}.
      const pusherError = error && error.type === "WebSocketError" ? error.error : error;
      const data = (pusherError && pusherError.type === "PusherError" && pusherError.data) || {};
      if (data.message) reason = `the node said: ${data.message} (${data.code})`;
      else if (data.code && !reason) reason = `the node closed the connection (code ${data.code})`;
      showNotice();
    });
    showState(pusher.connection.state);
    // Signed in, this browser can be reached as a user: node.broadcast(app_id, "#server-to-user-<id>", ...).
    pusher.signin();
  }

  function showState(state) {
    let label = "offline"; // failed, disconnected, unavailable (pusher-js retries that one on its own)
    if (state === "connected") {
      everConnected = true;
      label = "connected";
    } else if (state === "initialized" || state === "connecting") {
      label = everConnected ? "reconnecting" : "connecting";
    }
    $("state").textContent = state === "unavailable" ? "offline, retrying" : label;
    $("state").dataset.state = label;
    document.body.dataset.connection = label; // the online list is greyed out while we cannot see it change
    if (state === "connected") reason = "";
    connectionState = state;
    showNotice();
  }

  function showNotice() {
    const parts = reason ? [reason] : [];
    if (connectionState === "unavailable") {
      const { wsHost, wsPort } = config.pusher;
      parts.push(`cannot reach the node at ${wsHost || location.hostname}:${wsPort}, retrying`);
    }
    const text = parts.join("; ");
    $("notice").textContent = text;
    $("notice").hidden = !text || connectionState === "connected";
  }

  // --- rooms ---

  function roomFromHash() {
    const wanted = decodeURIComponent(location.hash.slice(1));
    return config.rooms.includes(wanted) ? wanted : config.rooms[0];
  }

  function renderRooms() {
    $("rooms").replaceChildren(...config.rooms.map((name) => {
      const link = document.createElement("a");
      link.href = `#${name}`;
      link.textContent = `# ${name}`;
      link.dataset.room = name;
      const item = document.createElement("li");
      item.append(link);
      return item;
    }));
  }

  function switchRoom(name) {
    if (name === room) return;
    if (channel) pusher.unsubscribe(channel.name);
    room = name;
    seen = new Set();
    for (const timer of typing.values()) clearTimeout(timer);
    typing.clear();
    $("messages").replaceChildren();
    $("members").replaceChildren();
    $("typing").textContent = "";
    $("send-error").textContent = "";
    $("room-title").textContent = `# ${name}`;
    for (const link of $("rooms").querySelectorAll("a")) {
      link.setAttribute("aria-current", link.dataset.room === name ? "page" : "false");
    }
    channel = pusher.subscribe(`presence-room-${name}`);
    // Also after every reconnect: pusher-js subscribes again, and we catch up.
    channel.bind("pusher:subscription_succeeded", () => {
      renderMembers();
      loadHistory(name);
    });
    channel.bind("pusher:subscription_error", (error) => {
      $("send-error").textContent = `could not join ${name}: ${error.error || error.status}`;
    });
    channel.bind("pusher:member_added", renderMembers);
    channel.bind("pusher:member_removed", (member) => {
      stopTyping(member.id);
      renderMembers();
    });
    channel.bind("message", showMessage);
    // Client events on a presence channel carry the sender's user_id, set by the node: nobody can type as you.
    channel.bind("client-typing", (data, metadata) => metadata && startTyping(metadata.user_id));
  }

  function renderMembers() {
    const people = [];
    channel.members.each((member) => people.push(member));
    people.sort((a, b) => a.info.name.localeCompare(b.info.name));
    $("members").replaceChildren(...people.map((member) => {
      const item = document.createElement("li");
      item.textContent = member.info.name;
      item.dataset.userId = member.id;
      if (member.id === channel.members.me.id) item.classList.add("me");
      return item;
    }));
    $("count").textContent = `(${people.length})`;
  }

  async function loadHistory(name) {
    try {
      const { messages } = await api("GET", `/messages?room=${encodeURIComponent(name)}`);
      if (name === room) messages.forEach(showMessage);
    } catch (error) {
      $("send-error").textContent = `could not load recent messages: ${error.message}`;
    }
  }

  // --- messages ---

  function showMessage(message) {
    if (message.room !== room || seen.has(message.id)) return;
    seen.add(message.id);
    stopTyping(message.author_id);
    const when = new Date(message.time);
    const time = document.createElement("time");
    time.dateTime = when.toISOString();
    time.textContent = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    const author = document.createElement("span");
    author.className = "author";
    author.textContent = message.author;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = message.text;
    const item = document.createElement("li");
    item.dataset.time = String(message.time);
    item.append(time, author, text);
    // History and live events can arrive in either order: keep the list sorted by time.
    const later = [...$("messages").children].find((other) => Number(other.dataset.time) > message.time);
    $("messages").insertBefore(item, later || null);
    if (!later) item.scrollIntoView({ block: "end" });
  }

  async function onSend(event) {
    event.preventDefault();
    const [text, reason] = check($("text").value, "Message");
    if (reason) return void ($("send-error").textContent = reason);
    // Cleared now, not when the answer comes: by then the next message may be half typed.
    $("text").value = "";
    lastTypingSent = 0; // the others just stopped showing us as typing: say so again at the next key
    // One POST at a time: two in flight can reach the server in either order, and the
    // server's clock orders messages. Each goes to the room it was written in.
    const to = room;
    const sent = sending.then(() => api("POST", "/messages", { room: to, text }));
    sending = sent.catch(() => {});
    try {
      const answer = await sent;
      $("send-error").textContent = "";
      showMessage(answer.message); // at once; the broadcast copy is then skipped
    } catch (error) {
      if (!$("text").value) $("text").value = text; // give it back to fix and resend
      $("send-error").textContent = error.message;
    }
  }

  // --- "X is typing..." ---

  function onTyping() {
    const now = Date.now();
    if (!channel || !channel.subscribed || !$("text").value.trim() || now - lastTypingSent < TYPING_EVERY_MS) return;
    lastTypingSent = now;
    channel.trigger("client-typing", {});
  }

  function startTyping(userId) {
    const member = channel.members.get(userId);
    if (!member || userId === channel.members.me.id) return;
    clearTimeout(typing.get(userId));
    typing.set(userId, setTimeout(() => stopTyping(userId), TYPING_SHOWN_MS));
    renderTyping();
  }

  function stopTyping(userId) {
    if (!typing.has(userId)) return;
    clearTimeout(typing.get(userId));
    typing.delete(userId);
    renderTyping();
  }

  function renderTyping() {
    const names = [...typing.keys()].map((id) => channel.members.get(id)).filter(Boolean).map((m) => m.info.name);
    let line = "";
    if (names.length === 1) line = `${names[0]} is typing...`;
    else if (names.length === 2) line = `${names[0]} and ${names[1]} are typing...`;
    else if (names.length > 2) line = "several people are typing...";
    $("typing").textContent = line;
  }

  start().catch((error) => {
    $("join-error").textContent = `the chat could not start: ${error.message}`;
  });
})();
