import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConsumerLoop } from './consumerLoop.js';

/** Turns until closed (or fails when told), and records the lifecycle's steps. */
class Ticker extends ConsumerLoop {
  readonly steps: string[] = [];
  #fail: Error | null = null;

  static start(): Ticker {
    const t = new Ticker();
    t.follow(t.#run());
    return t;
  }

  fail(err: Error): void {
    this.#fail = err;
  }

  async #run(): Promise<void> {
    while (!this.stopping) {
      if (this.#fail) throw this.#fail;
      await sleep(5);
    }
    this.steps.push('loop ended');
  }

  protected override async interrupt(): Promise<void> {
    this.steps.push('interrupt');
  }

  protected override async release(): Promise<void> {
    this.steps.push('release');
  }
}

describe('ConsumerLoop', () => {
  it('close() stops the loop once, in order, and returns the same promise every time', async () => {
    const t = Ticker.start();
    let ended = false;
    void t.closed().then(() => (ended = true));
    await sleep(20);
    assert.equal(ended, false);
    const first = t.close();
    assert.equal(t.close(), first);
    await first;
    await t.closed();
    assert.equal(ended, true);
    assert.equal(t.close(), first);
    assert.deepEqual(t.steps, ['interrupt', 'loop ended', 'release']);
  });

  it('closed() rejects with the loop failure before close(); close() still releases', async () => {
    const t = Ticker.start();
    t.fail(new Error('boom'));
    await assert.rejects(t.closed(), /boom/);
    await t.close();
    assert.deepEqual(t.steps, ['interrupt', 'release']);
  });

  it('await using closes it', async () => {
    let t: Ticker | undefined;
    {
      await using scoped = Ticker.start();
      t = scoped;
    }
    assert.deepEqual(t.steps, ['interrupt', 'loop ended', 'release']);
  });
});
