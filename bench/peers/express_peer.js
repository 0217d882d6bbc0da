// Peer for `make bench`: express-session with @google-cloud/connect-firestore on the same emulator.
// POST /login {username} stores the username in a new session; GET /profile reads it back (one document get).
'use strict';
const express = require('express');
const session = require('express-session');
const {Firestore} = require('@google-cloud/firestore');
const {FirestoreStore} = require('@google-cloud/connect-firestore');

const app = express();
app.use(express.json());
app.use(
  session({
    store: new FirestoreStore({dataset: new Firestore({projectId: process.env.GOOGLE_CLOUD_PROJECT}), kind: 'express-sessions'}),
    secret: 'bench-only-secret',
    name: 'sid',
    resave: false,
    saveUninitialized: false,
    cookie: {secure: false, httpOnly: true, sameSite: 'lax', maxAge: 7200 * 1000},
  }),
);
app.post('/login', (req, res) => {
  req.session.regenerate(err => {
    if (err) return res.status(503).json({error: 'store'});
    req.session.user = String(req.body.username);
    res.json({ok: true});
  });
});
app.get('/profile', (req, res) => {
  if (!req.session.user) return res.status(401).json({error: 'unauthenticated'});
  res.json({username: req.session.user, ok: true});
});
app.listen(Number(process.env.PORT), '127.0.0.1');
