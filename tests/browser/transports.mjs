// Drives pages of headless Chromium (the system's browser, driven by playwright-core) on behalf
// of the Rust end-to-end test crates/switchboard/tests/e2e_browser_transports.rs, which serves
// the pages itself and tells each what to connect to through the page URL's query.
//
// Reads one JSON command per line on stdin and writes one JSON reply per line on stdout:
// {"id", "ok": true, ...} or {"id", "ok": false, "error"}.
//
//   {"id":1,"cmd":"open","name":"a","url":"http://127.0.0.1:4000/?..."}
//      opens a page and waits until its script settled (window.report.state is no longer
//      "connecting"); replies with {"report": window.report, "console": [lines]}
//   {"id":2,"cmd":"report","name":"a"}      the page's window.report and console lines now
//   {"id":3,"cmd":"close","name":"a"}
//
// And for pages that are not the transports page (the admin page), plain DOM steps:
//   {"cmd":"goto","name":"p","url":"..."}                  opens a page, waits for its load
//   {"cmd":"fill","name":"p","selector":"#token","value":"..."}
//   {"cmd":"click","name":"p","selector":"#login-button"}
//   {"cmd":"waitText","name":"p","selector":"#trace","text":"..."}
//      waits until the element's text contains `text`; replies with {"text"}
//   {"cmd":"text","name":"p","selector":"#overview"}         the element's text now
//
// The browser closes when stdin ends. CHROMIUM names the browser binary (default:
// /usr/bin/chromium, else chromium on PATH).

import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import readline from "node:readline";
import { chromium } from "playwright-core";

const WAIT_MS = Number(process.env.WAIT_MS || 30000);

function findChromium() {
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  for (const candidate of ["/usr/bin/chromium", "/usr/bin/chromium-browser"]) {
    if (existsSync(candidate)) return candidate;
  }
  for (const name of ["chromium", "chromium-browser"]) {
    try {
      return execFileSync("sh", ["-c", `command -v ${name}`], { encoding: "utf8" }).trim();
    } catch {
      // not on PATH
    }
  }
  throw new Error("no Chromium found (apt-get install chromium, or set CHROMIUM)");
}

function reply(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

let browser;
let context;
const pages = new Map();

async function open(cmd) {
  if (pages.has(cmd.name)) throw new Error(`page ${cmd.name} is already open`);
  const page = await context.newPage();
  const lines = [];
  page.on("console", (m) => lines.push(`console.${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => lines.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) =>
    lines.push(`request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`),
  );
  pages.set(cmd.name, { page, lines });
  await page.goto(cmd.url);
  await page.waitForFunction(() => window.report && window.report.state !== "connecting");
  return report(cmd);
}

async function report(cmd) {
  const entry = pages.get(cmd.name);
  if (!entry) throw new Error(`no page ${cmd.name}`);
  return { report: await entry.page.evaluate(() => window.report), console: entry.lines };
}

async function close(cmd) {
  const entry = pages.get(cmd.name);
  if (!entry) throw new Error(`no page ${cmd.name}`);
  pages.delete(cmd.name);
  await entry.page.close();
  return {};
}

function entry(cmd) {
  const found = pages.get(cmd.name);
  if (!found) throw new Error(`no page ${cmd.name}`);
  return found;
}

async function goto(cmd) {
  if (pages.has(cmd.name)) throw new Error(`page ${cmd.name} is already open`);
  const page = await context.newPage();
  const lines = [];
  page.on("console", (m) => lines.push(`console.${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => lines.push(`page error: ${e.message}`));
  pages.set(cmd.name, { page, lines });
  const response = await page.goto(cmd.url);
  return { status: response ? response.status() : null, console: lines };
}

async function fill(cmd) {
  await entry(cmd).page.fill(cmd.selector, cmd.value);
  return {};
}

async function click(cmd) {
  await entry(cmd).page.click(cmd.selector);
  return {};
}

async function text(cmd) {
  const { page, lines } = entry(cmd);
  return { text: await page.textContent(cmd.selector), console: lines };
}

async function waitText(cmd) {
  const { page, lines } = entry(cmd);
  try {
    await page.waitForFunction(
      ([selector, wanted]) => {
        const element = document.querySelector(selector);
        return element !== null && element.textContent.includes(wanted);
      },
      [cmd.selector, cmd.text],
    );
  } catch (error) {
    const now = await page.textContent(cmd.selector).catch(() => null);
    throw new Error(`${cmd.selector} never contained ${JSON.stringify(cmd.text)}; it holds ${JSON.stringify(now)}; console: ${lines.join(" | ")}`);
  }
  return { text: await page.textContent(cmd.selector) };
}

const COMMANDS = { open, report, close, goto, fill, click, text, waitText };

try {
  browser = await chromium.launch({
    executablePath: findChromium(),
    headless: true,
    timeout: 120000,
    args: ["--disable-dev-shm-usage", "--disable-gpu"],
  });
  context = await browser.newContext();
  context.setDefaultTimeout(WAIT_MS);
  reply({ ready: true });
} catch (error) {
  reply({ ready: false, error: error.message });
  process.exit(1);
}

// Commands run one after another, in the order they arrive.
let queue = Promise.resolve();
const input = readline.createInterface({ input: process.stdin });
input.on("line", (line) => {
  queue = queue.then(async () => {
    let cmd;
    try {
      cmd = JSON.parse(line);
      const run = COMMANDS[cmd.cmd];
      if (!run) throw new Error(`unknown command ${cmd.cmd}`);
      reply({ id: cmd.id, ok: true, ...(await run(cmd)) });
    } catch (error) {
      reply({ id: cmd?.id, ok: false, error: error.message });
    }
  });
});
input.on("close", () => {
  queue.then(() => browser.close()).finally(() => process.exit(0));
});
