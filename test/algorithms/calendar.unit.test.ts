// Calendar periods as pure functions (Node, no workerd).
import { describe, expect, it } from "vitest";
import { type Period, periodEnd, periodLength, periodStart } from "../../src/algorithms/calendar.ts";

const DAY = 86_400_000;
const utc = (iso: string) => Date.parse(`${iso}Z`);

describe("calendar periods (pure)", () => {
  it.each([
    ["month", "2027-01-17T08:00:00", "2027-01-01T00:00:00", "2027-02-01T00:00:00", 31],
    ["month", "2027-02-28T23:59:59.999", "2027-02-01T00:00:00", "2027-03-01T00:00:00", 28],
    ["month", "2028-02-29T12:00:00", "2028-02-01T00:00:00", "2028-03-01T00:00:00", 29],
    ["month", "2100-02-10T00:00:00", "2100-02-01T00:00:00", "2100-03-01T00:00:00", 28],
    ["month", "2000-02-10T00:00:00", "2000-02-01T00:00:00", "2000-03-01T00:00:00", 29],
    ["month", "2027-04-30T23:00:00", "2027-04-01T00:00:00", "2027-05-01T00:00:00", 30],
    ["month", "2027-12-31T23:59:59.999", "2027-12-01T00:00:00", "2028-01-01T00:00:00", 31],
    ["month", "2028-01-01T00:00:00", "2028-01-01T00:00:00", "2028-02-01T00:00:00", 31],
    ["week", "2027-03-07T23:59:59.999", "2027-03-01T00:00:00", "2027-03-08T00:00:00", 7],
    ["week", "2027-03-08T00:00:00", "2027-03-08T00:00:00", "2027-03-15T00:00:00", 7],
    ["week", "2027-12-31T10:00:00", "2027-12-27T00:00:00", "2028-01-03T00:00:00", 7],
    ["week", "1970-01-01T00:00:00", "1969-12-29T00:00:00", "1970-01-05T00:00:00", 7],
    ["day", "2027-12-31T23:59:59.999", "2027-12-31T00:00:00", "2028-01-01T00:00:00", 1],
  ] as [Period, string, string, string, number][])("%s at %s: from %s to %s, %i days", (period, at, from, to, days) => {
    const start = periodStart(utc(at), period);
    expect(new Date(start).toISOString()).toBe(new Date(utc(from)).toISOString());
    expect(new Date(periodEnd(start, period)).toISOString()).toBe(new Date(utc(to)).toISOString());
    expect(periodLength(utc(at), period)).toBe(days * DAY);
  });
});
