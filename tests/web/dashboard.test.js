// The dashboard in a real browser (Debian's chromium driven by playwright-core), run by
// tests/it/web.rs with the herder it started:
//   node dashboard.test.js <login url> <ask file> <screenshot path>
// The apps: `alpha` (says `line-<n>-<ms>` when <ask file> appears), `beta` (one instance),
// `gamma`. Prints `ok: …` per step; exits non-zero at the first failure.
'use strict';

const fs = require('fs');
const path = require('path');

const modules = process.env.HERDER_TEST_PLAYWRIGHT;
const { chromium } = require(path.join(modules, 'playwright-core'));
const [loginUrl, askFile, screenshot] = process.argv.slice(2);
const T = 20000;

function ok(what) {
  console.log('ok: ' + what);
}

async function main() {
  const userDataDir = fs.mkdtempSync(path.join(require('os').tmpdir(), 'herder-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.HERDER_TEST_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-gpu'],
    viewport: { width: 1100, height: 900 },
  });
  try {
    const page = context.pages()[0] || await context.newPage();
    page.setDefaultTimeout(T);
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));

    // Without logging in: the login form, answered 401.
    const base = new URL(loginUrl).origin;
    const denied = await page.goto(base + '/');
    if (denied.status() !== 401) throw new Error('the page without a session answered ' + denied.status());
    ok('the page without the token answers 401');

    await page.goto(loginUrl);
    if (new URL(page.url()).pathname !== '/') throw new Error('login did not lead to the page: ' + page.url());
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === 'herder_session_' + new URL(loginUrl).port);
    if (!session || !session.httpOnly || session.sameSite !== 'Strict') {
      throw new Error('the session cookie is not HttpOnly and SameSite=Strict: ' + JSON.stringify(session));
    }
    ok('logged in with the token');

    const status = (app) => page.locator(`tr[data-app="${app}"] td.status`).first();
    const pid = (app) => page.locator(`tr[data-app="${app}"] td.pid`).first();
    for (const app of ['alpha', 'beta']) {
      await page.waitForFunction((a) => {
        const s = document.querySelector(`tr[data-app="${a}"] td.status`);
        return s && s.textContent === 'online';
      }, app);
    }
    ok('two apps online: ' + (await status('alpha').textContent()) + ', ' + (await status('beta').textContent()));

    // Restart alpha with the keyboard-reachable buttons: its pid changes.
    const before = await pid('alpha').textContent();
    await page.click('button[data-select="alpha"]');
    await page.click('button[data-verb="restart"]');
    await page.waitForFunction(([a, old]) => {
      const p = document.querySelector(`tr[data-app="${a}"] td.pid`);
      return p && /^\d+$/.test(p.textContent) && p.textContent !== old;
    }, ['alpha', before]);
    ok(`restarted alpha: pid ${before} -> ${await pid('alpha').textContent()}`);

    // A line alpha writes shows within a second.
    await page.waitForSelector('#logs[data-state="open"]');
    fs.writeFileSync(askFile, '');
    const handle = await page.waitForFunction(() => {
      const m = document.querySelector('#logs').textContent.match(/line-\d+-(\d+)/);
      return m && { written: Number(m[1]), seen: Date.now() };
    }, null, { polling: 'raf' });
    const { written, seen } = await handle.jsonValue();
    if (seen - written >= 1000) throw new Error(`the log line took ${seen - written} ms`);
    ok(`a new log line appeared ${seen - written} ms after alpha wrote it`);

    // The search box filters the lines.
    await page.fill('#log-search', 'no-such-line');
    if ((await page.textContent('#logs')).includes('line-')) throw new Error('the search did not filter');
    await page.fill('#log-search', 'line-');
    if (!(await page.textContent('#logs')).includes('line-')) throw new Error('the search hid the line');
    ok('the log search filters');

    // Scale beta from 1 to 3: three rows.
    if (await page.locator('tr[data-app="beta"]').count() !== 1) throw new Error('beta has not one row');
    await page.click('button[data-select="beta"]');
    await page.fill('#scale-count', '3');
    await page.click('#scale');
    await page.waitForFunction(() => document.querySelectorAll('tr[data-app="beta"]').length === 3);
    await page.waitForFunction(() => [...document.querySelectorAll('tr[data-app="beta"] td.status')]
      .every((s) => s.textContent === 'online'));
    ok('scaled beta from 1 to 3: three rows online');

    // The charts of the selected app, and three apps, in the screenshot.
    await page.waitForFunction(() => document.querySelectorAll('button[data-select]').length === 3);
    await page.waitForSelector('#cpu-chart[data-points]:not([data-points="0"])', { timeout: 15000 });
    await page.waitForSelector('#mem-chart[data-points]:not([data-points="0"])');
    await page.waitForFunction(() => document.querySelector('#events').children.length > 0);
    await page.screenshot({ path: screenshot, fullPage: true });
    ok('screenshot of three apps and a chart: ' + screenshot);

    // Readable on a phone: no horizontal scroll of the page itself.
    await page.setViewportSize({ width: 390, height: 844 });
    const wide = await page.evaluate(() => document.documentElement.scrollWidth);
    if (wide > 390) throw new Error(`the page is ${wide} px wide on a 390 px phone`);
    ok('fits a 390 px wide screen');

    if (errors.length) throw new Error('errors in the page: ' + errors.join('; '));
    ok('no error in the page');
  } finally {
    await context.close();
  }
}

main().then(() => process.exit(0), (e) => {
  console.error('FAILED: ' + (e && e.stack || e));
  process.exit(1);
});
