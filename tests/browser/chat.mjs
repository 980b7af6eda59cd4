// Opens the serverless chat sample (examples/serverless-chat) in two pages of headless
// Chromium, the system's browser driven by playwright-core, and chats between them:
//
//   node tests/browser/chat.mjs http://127.0.0.1:7071
//
// CHROMIUM names the browser binary (default: /usr/bin/chromium, else chromium on PATH).
// Prints one JSON object with each page's message list; exits non-zero (with the pages' console
// output) on the first expectation not met, and when there is no browser.

import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { chromium } from "playwright-core";

const app = process.argv[2];
if (!app) {
  console.error("usage: node tests/browser/chat.mjs <app url>");
  process.exit(64);
}
const WAIT_MS = Number(process.env.WAIT_MS || 60000);

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
  console.error("error: no Chromium found (apt-get install chromium, or set CHROMIUM)");
  process.exit(1);
}

const pageLogs = [];
const browser = await chromium.launch({
  executablePath: findChromium(),
  headless: true,
  timeout: 120000,
  args: ["--disable-dev-shm-usage", "--disable-gpu"],
});
try {
  const context = await browser.newContext();
  context.setDefaultTimeout(WAIT_MS);

  async function open(name) {
    const page = await context.newPage();
    const log = (line) => pageLogs.push(`${name} ${line}`);
    page.on("console", (m) => log(`console.${m.type()}: ${m.text()} (${m.location().url})`));
    page.on("pageerror", (e) => log(`page error: ${e.message}`));
    page.on("response", (r) => {
      if (r.status() >= 400) log(`response: ${r.status()} ${r.request().method()} ${r.url()}`);
    });
    await page.goto(app);
    await page.fill("#name", name);
    await page.click("#join");
    await page.waitForSelector('#status[data-state="connected"]');
    return page;
  }
  const exactly = (text) => new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`);
  const line = (page, text) =>
    page.locator("#messages li").filter({ hasText: exactly(text) }).first().waitFor();
  const lines = (page) => page.locator("#messages li").allTextContents();

  const ann = await open("ann");
  await line(ann, "ann joined");
  const ben = await open("ben");
  await Promise.all([line(ann, "ben joined"), line(ben, "ben joined")]);

  await ann.fill("#message", "hello from chromium");
  await ann.press("#message", "Enter");
  await Promise.all([line(ann, "ann: hello from chromium"), line(ben, "ann: hello from chromium")]);
  // The box is cleared once the invocation's completion came back through the upstream.
  await ann.waitForFunction(() => document.getElementById("message").value === "");

  const benSaw = await lines(ben);
  await ben.close();
  await line(ann, "ben left");
  const annSaw = await lines(ann);

  const errors = pageLogs.filter((l) => / page error: | console\.error: /.test(l));
  if (errors.length) throw new Error(`errors in the pages:\n${errors.join("\n")}`);
  console.log(JSON.stringify({ ann: annSaw, ben: benSaw }));
} catch (error) {
  console.error(error.message);
  console.error(pageLogs.join("\n"));
  process.exitCode = 1;
} finally {
  await browser.close();
}
