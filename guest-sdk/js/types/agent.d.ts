/// <reference path="./interfaces/clawcage-agent-handler.d.ts" />
/// <reference path="./interfaces/clawcage-agent-inference.d.ts" />
/// <reference path="./interfaces/clawcage-agent-log.d.ts" />
/// <reference path="./interfaces/clawcage-agent-tools.d.ts" />
/// <reference path="./interfaces/clawcage-agent-types.d.ts" />
declare module 'clawcage:agent/agent@0.2.0' {
  export type * as ClawcageAgentInference020 from 'clawcage:agent/inference@0.2.0'; // import clawcage:agent/inference@0.2.0
  export type * as ClawcageAgentLog020 from 'clawcage:agent/log@0.2.0'; // import clawcage:agent/log@0.2.0
  export type * as ClawcageAgentTools020 from 'clawcage:agent/tools@0.2.0'; // import clawcage:agent/tools@0.2.0
  export type * as ClawcageAgentTypes020 from 'clawcage:agent/types@0.2.0'; // import clawcage:agent/types@0.2.0
  export * as handler from 'clawcage:agent/handler@0.2.0'; // export clawcage:agent/handler@0.2.0
}
