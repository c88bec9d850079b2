// Analysis Corp's app: connects to PostgreSQL through the Sluice inlet, creates
// a table, inserts rows, reads them back and prints them.
//
// Environment: PGHOST (default "sluice"), PGPORT (default 15432), PGUSER,
// PGPASSWORD, PGDATABASE (all default "postgres"), SLUICE_MARKER (optional
// string stored in the rows, so a capture can look for it).
"use strict";
const { Client } = require("pg");

async function main() {
  const client = new Client({
    host: process.env.PGHOST || "sluice",
    port: Number(process.env.PGPORT || 15432),
    user: process.env.PGUSER || "postgres",
    password: process.env.PGPASSWORD || "postgres",
    database: process.env.PGDATABASE || "postgres",
    connectionTimeoutMillis: 10000,
  });
  const marker = process.env.SLUICE_MARKER || "";
  await client.connect();
  console.log(`app: connected to ${client.host}:${client.port}`);
  try {
    await client.query("DROP TABLE IF EXISTS users");
    await client.query("CREATE TABLE users (name VARCHAR(100), note VARCHAR(200))");
    console.log("app: created table users");
    for (const name of ["Alice", "Bob", "Carol"]) {
      await client.query("INSERT INTO users (name, note) VALUES ($1, $2)", [name, `${name} ${marker}`.trim()]);
    }
    console.log("app: inserted 3 rows");
    const res = await client.query("SELECT name, note FROM users ORDER BY name");
    for (const row of res.rows) {
      console.log(`app: row ${JSON.stringify(row)}`);
    }
    if (res.rows.length !== 3) {
      throw new Error(`read back ${res.rows.length} rows, want 3`);
    }
    console.log("app: The example run was successful");
  } finally {
    await client.end();
  }
}

main().catch((err) => {
  console.error(`app: failed: ${err.message}`);
  process.exit(1);
});
