/**
 * Assertions shared by the unit tests.
 * @module
 */
import { equal, ok, throws } from "node:assert/strict";

/** Asserts that `fn` throws exactly a RangeError (not a subclass) with exactly `message`. */
export function throwsRange(fn: () => unknown, message: string): void {
  throws(fn, (e: unknown) => {
    ok(e instanceof RangeError, `expected a RangeError, got ${e}`);
    equal(Object.getPrototypeOf(e), RangeError.prototype);
    equal(e.message, message);
    return true;
  });
}
