// A Node/Express backend that uses pdauth (`pdauth serve`) for Connect PagerDuty and calls
// PagerDuty through pdauth's proxy: it never sees a PagerDuty token.
//
//   PDAUTH_URL=http://127.0.0.1:8000 PDAUTH_API_KEY=… PORT=3000 node server.js
//
// GET /connect?user=alice    sends the user through a one-time connect link
// GET /incidents?user=alice  lists the user's PagerDuty incidents (JSON)
"use strict";

const express = require("express");

const PDAUTH_URL = process.env.PDAUTH_URL || "http://127.0.0.1:8000";
const PDAUTH_API_KEY = process.env.PDAUTH_API_KEY;
if (!PDAUTH_API_KEY) {
  console.error("set PDAUTH_API_KEY (one of the service's PDAUTH_API_KEYS)");
  process.exit(2);
}

// One call to pdauth's JSON API; throws on a non-2xx answer with pdauth's error code.
async function pdauth(method, path, body) {
  const response = await fetch(PDAUTH_URL + path, {
    method,
    headers: {
      Authorization: `Bearer ${PDAUTH_API_KEY}`,
      "Content-Type": "application/json",
      Accept: "application/json",
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(`pdauth answered ${response.status}`);
    error.status = response.status;
    error.code = data.error && data.error.code;
    throw error;
  }
  return data;
}

// Your app's signed-in user; this example takes it from the query string.
function userOf(req) {
  const user = req.query.user;
  return typeof user === "string" && /^[A-Za-z0-9_.@-]{1,64}$/.test(user) ? user : null;
}

const app = express();

app.get("/connect", async (req, res, next) => {
  const owner = userOf(req);
  if (!owner) return res.status(400).send("who are you? (?user=…)");
  try {
    const link = await pdauth("POST", "/api/v1/connect-sessions", { owner, return_to: "/" });
    res.redirect(303, link.url);
  } catch (err) {
    next(err);
  }
});

app.get("/incidents", async (req, res, next) => {
  const owner = userOf(req);
  if (!owner) return res.status(400).send("who are you? (?user=…)");
  try {
    const listed = await pdauth("GET", `/api/v1/connections?owner=${encodeURIComponent(owner)}`);
    const active = listed.connections.find((c) => c.status === "active");
    if (!active) return res.redirect(303, `/connect?user=${encodeURIComponent(owner)}`);
    // The proxy forwards to PagerDuty's REST API with the connection's (refreshed) token.
    const page = await pdauth("GET", `/api/v1/connections/${active.id}/proxy/incidents?limit=10`);
    res.json({
      incidents: page.incidents.map((i) => ({
        number: i.incident_number,
        title: i.title,
        status: i.status,
      })),
    });
  } catch (err) {
    next(err);
  }
});

app.use((err, req, res, next) => {
  res.status(502).json({ error: err.code || "pdauth_unavailable" });
});

const server = app.listen(Number(process.env.PORT || 3000), "127.0.0.1", () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
