import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RecentIds } from './recentIds.js';

test('a repeat within the capacity is refused; the oldest id is forgotten first; the size stays bounded', () => {
  const ids = new RecentIds(3);
  assert.deepEqual(
    ['a', 'b', 'a', 'c', 'b'].map((id) => ids.add(id)),
    [true, true, false, true, false],
  );
  assert.equal(ids.add('d'), true); // a goes
  assert.equal(ids.size, 3);
  assert.equal(ids.add('a'), true, 'forgotten, so new again');
  assert.equal(ids.add('c'), false);
  for (let i = 0; i < 1000; i++) ids.add(`x${i}`);
  assert.equal(ids.size, 3);
});
