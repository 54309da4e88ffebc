// Triage, in TypeScript: on a GitHub `issues.opened` event, a fast model
// runs a tool-use loop: it reads the issue and calls `add_labels` (applied
// through the `github` tool), then ends with a one-line summary, which the
// agent posts to the team's Slack channel (through the `slack` tool).
//
// The same agent as sample-agents/triage (Rust), request for request: it
// replays that agent's cassette. The agent never holds a credential; a tool
// the operator has not granted comes back to the model as a failed tool
// result, so the run still completes and the report says what is missing.
import {
  CapabilityError,
  Model,
  Tool,
  defineHandler,
  json,
  log,
  toolResults,
  toolSpec,
  user,
  type Event,
  type Message,
} from '@clawcage/sdk';

/** Labels the model may choose from. */
const LABELS = ['bug', 'feature', 'question', 'docs', 'security'] as const;
type Label = (typeof LABELS)[number];
/** Most model turns per issue. */
const MAX_ROUNDS = 4;
/** The Slack channel summaries go to; the operator grants `slack` on exactly this id. */
const TRIAGE_CHANNEL = 'C0TRIAGE01';

interface IssueEvent {
  issue: { number: number; title: string; body?: string | null };
  repository: { full_name: string };
}

type Report =
  | { status: 'not-granted'; missing: string[] }
  | { status: 'ignored'; reason: string }
  | {
      status: 'triaged';
      repo: string;
      number: number;
      labels: Label[];
      summary: string;
      rounds: number;
      posted_to_slack: boolean;
      failed_actions: string[];
    };

const ADD_LABELS = toolSpec('add_labels', 'Adds labels to the issue being triaged.', {
  type: 'object',
  properties: { labels: { type: 'array', items: { type: 'string', enum: [...LABELS] } } },
  required: ['labels'],
});

const isLabel = (label: unknown): label is Label => LABELS.includes(label as Label);

/** Runs `f`; answers its result, or the capability error it threw. */
function attempt<T>(f: () => T): { ok: true; value: T } | { ok: false; error: CapabilityError } {
  try {
    return { ok: true, value: f() };
  } catch (error) {
    if (error instanceof CapabilityError) return { ok: false, error };
    throw error;
  }
}

function triage(event: Event<IssueEvent>): Report {
  if (event.source !== 'github' || event.kind !== 'issues.opened') {
    return { status: 'ignored', reason: `${event.source}/${event.kind} is not github/issues.opened` };
  }
  const { issue, repository } = event.payload;
  const opened = attempt(() => Model.open('default'));
  if (!opened.ok) {
    if (opened.error.kind !== 'not-granted') throw opened.error;
    log.warn(`cannot triage: ${opened.error.message}`);
    const missing = ['model binding `default`'];
    const github = attempt(() => Tool.open('github'));
    if (!github.ok && github.error.kind === 'not-granted') missing.push('tool `github`');
    return { status: 'not-granted', missing };
  }
  const model = opened.value;

  const system =
    `You triage GitHub issues for ${repository.full_name}. Call add_labels with the fitting labels, ` +
    'then answer with a one-sentence summary.';
  const messages: Message[] = [user(`Issue #${issue.number}: ${issue.title}\n\n${issue.body ?? ''}`)];
  const labels: Label[] = [];
  const failedActions: string[] = [];
  let rounds = 0;
  let summary: string;
  for (;;) {
    rounds += 1;
    const completion = model.complete({ system, messages, maxTokens: 400, temperature: 0, tools: [ADD_LABELS] });
    log.info(
      `round ${rounds}: ${completion.stopReason}, ${completion.usage.inputTokens} tokens in, ${completion.usage.outputTokens} out`,
    );
    if (completion.stopReason !== 'tool-use' || rounds === MAX_ROUNDS) {
      summary = completion.text;
      break;
    }
    messages.push(completion.toMessage());
    const results = completion.toolUses.map((call) => {
      let outcome;
      if (call.name === 'add_labels') {
        const wanted = (Array.isArray(call.input?.labels) ? call.input.labels : []).filter(isLabel);
        labels.push(...wanted);
        outcome = attempt(() =>
          Tool.open('github').call('issues.add_labels', { repo: repository.full_name, number: issue.number, labels: wanted }),
        );
      } else {
        outcome = { ok: false as const, error: new Error(`invalid input: no tool named ${call.name}`) };
      }
      if (outcome.ok) return { toolUseId: call.id, content: json(outcome.value), isError: false };
      failedActions.push(`${call.name}: ${outcome.error.message}`);
      return { toolUseId: call.id, content: outcome.error.message, isError: true };
    });
    messages.push(toolResults(results));
  }

  const text = `${repository.full_name}#${issue.number} ${issue.title} [${labels.join(', ')}]: ${summary}`;
  const posted = attempt(() => Tool.open('slack').call('chat.postMessage', { channel: TRIAGE_CHANNEL, text }));
  if (!posted.ok) failedActions.push(`post to Slack: ${posted.error.message}`);

  return {
    status: 'triaged',
    repo: repository.full_name,
    number: issue.number,
    labels,
    summary,
    rounds,
    posted_to_slack: posted.ok,
    failed_actions: failedActions,
  };
}

export const handler = defineHandler<IssueEvent>(triage);
