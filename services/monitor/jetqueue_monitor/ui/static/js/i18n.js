// Korean and English strings and number/time formatting.

const STRINGS = {
  ko: {
    app_title: '워커 모니터',
    tab_overview: '개요', tab_queues: '큐', tab_jobs: '작업', tab_workers: '워커',
    live: '실시간', reconnecting: '재연결 중…', offline: '연결 끊김',
    updated: '갱신', logout: '로그아웃', language: 'English', language_label: 'Switch to English',
    role_viewer: '조회자', role_operator: '운영자', role_admin: '관리자',
    // login
    login_title: '워커 모니터 로그인', username: '사용자 이름', password: '비밀번호', login: '로그인',
    login_failed: '사용자 이름 또는 비밀번호가 올바르지 않습니다.',
    // overview
    kpi_online_workers: '온라인 워커', kpi_waiting: '대기', kpi_delayed: '지연', kpi_failed_24h: '실패 (24시간)',
    kpi_success_rate: '성공률 (24시간)', kpi_duration: '처리 시간 평균 / P95',
    kpi_active: '실행 중 {n}', kpi_dlq: '실패 보관함 {n}', kpi_completed: '완료 {n}', kpi_scheduled: '예약·재시도 대기',
    kpi_workers_hint: '하트비트 기준', kpi_p95: 'P95 {d} · 최근 24시간',
    incidents_title: '현재 이상 징후 {n}건', no_incidents: '이상 징후 없음 — 모든 큐가 정상입니다.',
    open: '열기', severity_critical: '심각', severity_warning: '경고',
    // queues
    col_queue: '큐', col_status: '상태', col_waiting: '대기', col_active: '실행', col_delayed: '지연', col_failed: '실패',
    col_throughput: '처리량', col_workers: '워커', col_last_processed: '마지막 처리',
    per_min: '{n}/분', status_Running: '실행 중', status_Paused: '일시정지', status_Degraded: '성능 저하',
    paused_until: '{t}까지', trend_title: '최근 1시간 추이', trend_empty: '아직 수집된 샘플이 없습니다.',
    throughput_title: '분당 완료', top_errors: '주요 오류 (24시간)', no_errors: '최근 24시간 동안 실패 없음',
    actions: '조치', pause: '일시정지', pause_until: '재개 시각 (선택)', resume: '재개', retry_failed: '실패 작업 재시도',
    drain: '대기열 비우기', clean: '실패 기록 정리', admin_only: '대기열 비우기·정리는 관리자만 할 수 있습니다.',
    viewer_no_actions: '조회 권한으로는 조치를 실행할 수 없습니다.',
    close: '닫기', back: '뒤로', view_jobs: '이 큐의 작업 보기', view_failed: '실패 작업 보기', view_workers: '이 큐의 워커 보기',
    paused_ok: '{q} 큐를 일시정지했습니다.', resumed_ok: '{q} 큐를 재개했습니다.',
    retried_ok: '실패 작업 {n}개를 다시 대기열에 넣었습니다.', drained_ok: '대기 작업 {n}개를 삭제했습니다.',
    cleaned_ok: '기록 {n}개를 정리했습니다.',
    confirm_retry_failed: '{q} 큐의 실패 작업 {n}개를 다시 대기열에 넣습니다.',
    lag: '가장 오래 기다린 작업 {t}',
    // jobs
    filter_queue: '큐', filter_status: '상태', filter_type: '작업 유형', filter_user: '사용자', filter_range: '기간',
    search: '작업 ID 또는 오류 내용 검색', filters: '필터', all: '전체', clear_filters: '필터 초기화', live_updates: '실시간 갱신',
    range_15m: '최근 15분', range_1h: '최근 1시간', range_6h: '최근 6시간', range_24h: '최근 24시간', range_7d: '최근 7일',
    col_type: '유형', col_user: '사용자', col_attempts: '시도', col_duration: '소요', col_error: '오류', col_created: '생성',
    no_jobs: '조건에 맞는 작업이 없습니다.', load_more: '이전 작업 더 보기', jobs_count: '작업 {n}개',
    jobs_note: '등록된 순간부터 모든 작업이 표시됩니다 (대기·예약 포함).',
    js_scheduled: '예약', js_waiting: '대기', js_active: '실행 중', js_completed: '완료', js_failed: '실패', js_cancelled: '취소',
    // drawer
    summary: '요약', raw_error: '원본 오류', attempts_history: '시도 기록', artifacts: '첨부 파일',
    data: '입력 데이터', result: '결과', payload_hidden: '현재 역할로는 작업 데이터와 첨부 파일을 볼 수 없습니다.',
    f_queue: '큐', f_type: '유형', f_user: '사용자', f_attempts: '시도', f_worker: '워커', f_duration: '소요 시간',
    f_created: '생성', f_started: '시작', f_finished: '종료', f_progress: '진행률', f_job_id: '작업 ID',
    attempt_n: '#{n}', no_attempts: '아직 실행된 시도가 없습니다.', retry: '재시도', cancel_job: '작업 취소',
    confirm_retry_job: '이 작업을 다시 대기열에 넣습니다.', confirm_cancel_job: '이 작업을 취소합니다. 실행 중이면 워커에 중단을 요청합니다.',
    retry_ok: '작업을 다시 대기열에 넣었습니다.', cancel_ok: '작업을 취소했습니다.', open_raw: '새 탭에서 열기',
    snapshot_note: 'HTML 스냅샷은 스크립트 없이 격리된 틀 안에서 표시됩니다.', download: '내려받기',
    // workers
    col_worker: '워커', col_host: '호스트', col_pid: 'PID', col_version: '버전', col_processed: '처리', col_heartbeat: '마지막 하트비트',
    col_uptime: '가동 시간', no_workers: '등록된 워커가 없습니다.', ws_ONLINE: '온라인', ws_OFFLINE: '오프라인', ws_DEGRADED: '성능 저하',
    // dialogs
    danger_title: '위험한 작업', cannot_undo: '이 작업은 취소할 수 없습니다.', affected: '영향 받는 작업',
    type_to_confirm: '확인하려면 {w}을(를) 입력하세요', reason: '사유 (감사 기록에 남습니다, 선택)', cancel: '취소', confirm: '확인',
    include_delayed: '지연(예약) 작업도 함께 삭제', clean_state: '정리할 기록', clean_failed: '실패 (실패 보관함)',
    clean_completed: '완료', expired: '확인 시간이 지나 다시 계산했습니다. 다시 입력하세요.',
    drain_what: '{q} 큐의 대기 작업을 모두 삭제합니다.', clean_what: '{q} 큐의 기록을 삭제합니다.',
    error: '오류', forbidden: '권한이 없습니다: {d}', failed_request: '요청 실패: {d}',
    kbd_hint: '단축키: 1–6 탭 이동 · / 검색 · Esc 닫기',
    // new tabs and shared
    tab_schedules: '스케줄', tab_audit: '감사 로그',
    // overview: incidents
    rule_no_worker: '워커 없음', rule_backlog_surge: '대기열 급증', rule_failure_spike: '실패율 급등', rule_stalled: '멈춘 작업',
    rule_dlq_growth: '실패 보관함 증가', n_queues: '큐 {n}개', acknowledge: '확인', snooze: '1시간 숨기기',
    acked_by: '{u}님이 확인함', snoozed_n: '숨긴 이상 징후 {n}건', acked_all: '모든 이상 징후를 확인했습니다',
    ack_ok: '이상 징후를 확인했습니다.', snooze_ok: '이상 징후를 1시간 동안 숨깁니다.',
    // jobs
    col_job_id: '작업 ID', col_select: '선택', filter_level: '우선순위', level_n: 'P{n}', level_0: 'P0 (긴급)', level_1: 'P1 (보통)', level_2: 'P2 (낮음)',
    range_custom: '직접 지정', range_from: '시작', range_to: '끝', runs_at: '{t} 실행 예정', select_all: '모두 선택',
    selected_n: '{n}개 선택됨', bulk_on_selection: '선택한 작업:', bulk_all: '조건에 맞는 모든 작업에:',
    promote: '지금 실행', delete_job: '삭제', bulk_retry: '재시도', bulk_cancel: '취소', bulk_promote: '지금 실행', bulk_delete: '삭제',
    bulk_title: '{a} — 작업 {n}개', bulk_count_note: '지금 조건에 맞는 작업입니다. 실행해도 이 수를 넘지 않습니다.',
    bulk_over: '작업이 너무 많습니다: 한 번에 {n}개까지만 처리합니다.', bulk_running: '{a}: {d} / {n}',
    bulk_done: '{a} 완료: {d}개 처리, 실패 {f}개, 건너뜀 {s}개', bulk_nothing: '해당하는 작업이 없습니다.',
    confirm_promote_job: '예약된 작업을 지금 대기열에 넣습니다.', promote_ok: '작업을 지금 실행하도록 대기열에 넣었습니다.',
    confirm_delete_job: '작업과 기록을 삭제합니다. 되돌릴 수 없습니다.', delete_ok: '작업을 삭제했습니다.',
    f_level: '우선순위', f_run_at: '실행 예정', f_enqueued: '등록',
    // schedules
    col_schedule: '스케줄', col_cron: '주기', col_next_run: '다음 실행', col_last_runs: '최근 실행', col_actions: '조치',
    sched_active: '활성', sched_paused: '일시정지', new_schedule: '새 스케줄', edit: '편집', run_now: '지금 실행',
    no_schedules: '등록된 스케줄이 없습니다.', schedules_count: '스케줄 {n}개', sched_queue: '큐', sched_name: '이름', sched_cron: 'cron 식 (5 또는 6필드, @daily, @every 5m)',
    sched_tz: '시간대', sched_job_name: '작업 이름 (비우면 스케줄 이름)', sched_data: '데이터 (JSON)', sched_priority: '우선순위 (1 = 가장 급함)',
    save: '저장', sched_saved: '스케줄을 저장했습니다.', sched_paused_ok: '스케줄을 일시정지했습니다.', sched_resumed_ok: '스케줄을 재개했습니다.',
    sched_triggered_ok: '작업을 실행했습니다: {id}', sched_deleted_ok: '스케줄을 삭제했습니다.', confirm_delete_schedule: '{s} 스케줄을 삭제합니다.',
    confirm_trigger: '{s} 스케줄의 작업을 지금 한 번 실행합니다.', bad_json: '데이터가 올바른 JSON이 아닙니다.', runs_none: '아직 실행 기록이 없습니다',
    // audit
    col_time: '시각', col_actor: '사용자', col_action: '작업', col_entity: '대상', col_outcome: '결과', col_reason: '사유',
    outcome_ok: '성공', outcome_failed: '실패', outcome_refused: '거부', filter_actor: '사용자', filter_action: '작업',
    filter_outcome: '결과', no_audit: '조건에 맞는 기록이 없습니다.', load_older: '이전 기록 더 보기',
    // queues
    pause_reason: '사유 (감사 기록에 남습니다, 선택)', window_1h: '1시간', window_24h: '24시간', window_7d: '7일',
    history_title: '시간별 완료·실패', waiting_levels: 'P0 {a} · P1 {b} · P2 {c}',
  },
  en: {
    app_title: 'Worker Monitor',
    tab_overview: 'Overview', tab_queues: 'Queues', tab_jobs: 'Jobs', tab_workers: 'Workers',
    live: 'Live', reconnecting: 'Reconnecting…', offline: 'Disconnected',
    updated: 'Updated', logout: 'Log out', language: '한국어', language_label: '한국어로 보기',
    role_viewer: 'Viewer', role_operator: 'Operator', role_admin: 'Admin',
    login_title: 'Sign in to Worker Monitor', username: 'Username', password: 'Password', login: 'Sign in',
    login_failed: 'Wrong username or password.',
    kpi_online_workers: 'Online workers', kpi_waiting: 'Waiting', kpi_delayed: 'Delayed', kpi_failed_24h: 'Failed (24 h)',
    kpi_success_rate: 'Success rate (24 h)', kpi_duration: 'Duration avg / p95',
    kpi_active: '{n} active', kpi_dlq: '{n} in dead-letter', kpi_completed: '{n} completed', kpi_scheduled: 'scheduled, retry wait',
    kpi_workers_hint: 'by heartbeat', kpi_p95: 'p95 {d} · last 24 h',
    incidents_title: '{n} open incident(s)', no_incidents: 'No incidents — every queue looks healthy.',
    open: 'Open', severity_critical: 'Critical', severity_warning: 'Warning',
    col_queue: 'Queue', col_status: 'Status', col_waiting: 'Waiting', col_active: 'Active', col_delayed: 'Delayed', col_failed: 'Failed',
    col_throughput: 'Throughput', col_workers: 'Workers', col_last_processed: 'Last processed',
    per_min: '{n}/min', status_Running: 'Running', status_Paused: 'Paused', status_Degraded: 'Degraded',
    paused_until: 'until {t}', trend_title: 'Last hour', trend_empty: 'No samples collected yet.',
    throughput_title: 'Completed per minute', top_errors: 'Top error reasons (24 h)', no_errors: 'No failures in the last 24 h',
    actions: 'Actions', pause: 'Pause', pause_until: 'Resume at (optional)', resume: 'Resume', retry_failed: 'Retry failed',
    drain: 'Drain', clean: 'Clean failed', admin_only: 'Drain and Clean are for admins.',
    viewer_no_actions: 'Your role can look but not act.',
    close: 'Close', back: 'Back', view_jobs: 'Jobs of this queue', view_failed: 'Failed jobs', view_workers: 'Workers of this queue',
    paused_ok: 'Paused {q}.', resumed_ok: 'Resumed {q}.',
    retried_ok: 'Moved {n} failed job(s) back to waiting.', drained_ok: 'Removed {n} waiting job(s).',
    cleaned_ok: 'Removed {n} record(s).',
    confirm_retry_failed: 'Move the {n} failed job(s) of {q} back to waiting.',
    lag: 'oldest waiting {t}',
    filter_queue: 'Queue', filter_status: 'Status', filter_type: 'Job type', filter_user: 'User', filter_range: 'Time range',
    search: 'Search job id or error text', filters: 'Filters', all: 'All', clear_filters: 'Clear filters', live_updates: 'Live',
    range_15m: 'Last 15 min', range_1h: 'Last hour', range_6h: 'Last 6 h', range_24h: 'Last 24 h', range_7d: 'Last 7 days',
    col_type: 'Type', col_user: 'User', col_attempts: 'Attempts', col_duration: 'Duration', col_error: 'Error', col_created: 'Created',
    no_jobs: 'No jobs match these filters.', load_more: 'Load older jobs', jobs_count: '{n} jobs',
    jobs_note: 'Every job from the moment it is accepted, waiting and delayed ones too.',
    js_scheduled: 'Scheduled', js_waiting: 'Waiting', js_active: 'Active', js_completed: 'Completed', js_failed: 'Failed', js_cancelled: 'Cancelled',
    summary: 'Summary', raw_error: 'Raw error', attempts_history: 'Attempts', artifacts: 'Artifacts',
    data: 'Input data', result: 'Result', payload_hidden: 'Your role cannot see job data or files.',
    f_queue: 'Queue', f_type: 'Type', f_user: 'User', f_attempts: 'Attempts', f_worker: 'Worker', f_duration: 'Duration',
    f_created: 'Created', f_started: 'Started', f_finished: 'Finished', f_progress: 'Progress', f_job_id: 'Job id',
    attempt_n: '#{n}', no_attempts: 'No attempt has run yet.', retry: 'Retry', cancel_job: 'Cancel job',
    confirm_retry_job: 'Put this job back in the queue.', confirm_cancel_job: 'Cancel this job. A running job is asked to stop.',
    retry_ok: 'The job is waiting again.', cancel_ok: 'The job was cancelled.', open_raw: 'Open in a new tab',
    snapshot_note: 'HTML snapshots are shown in a sandboxed frame, without scripts.', download: 'Download',
    col_worker: 'Worker', col_host: 'Host', col_pid: 'PID', col_version: 'Version', col_processed: 'Processed', col_heartbeat: 'Last heartbeat',
    col_uptime: 'Uptime', no_workers: 'No workers have reported.', ws_ONLINE: 'Online', ws_OFFLINE: 'Offline', ws_DEGRADED: 'Degraded',
    danger_title: 'Dangerous action', cannot_undo: 'This cannot be undone.', affected: 'Jobs affected',
    type_to_confirm: 'Type {w} to confirm', reason: 'Reason (kept in the audit log, optional)', cancel: 'Cancel', confirm: 'Confirm',
    include_delayed: 'Also remove delayed (scheduled) jobs', clean_state: 'Records to remove', clean_failed: 'Failed (dead-letter)',
    clean_completed: 'Completed', expired: 'The confirmation expired; the count was refreshed. Type the word again.',
    drain_what: 'Removes every waiting job of {q}.', clean_what: 'Removes job records of {q}.',
    error: 'Error', forbidden: 'Not allowed: {d}', failed_request: 'Request failed: {d}',
    kbd_hint: 'Keys: 1–6 tabs · / search · Esc close',
    tab_schedules: 'Schedules', tab_audit: 'Audit log',
    rule_no_worker: 'No worker', rule_backlog_surge: 'Backlog surge', rule_failure_spike: 'Failure spike', rule_stalled: 'Stalled jobs',
    rule_dlq_growth: 'Dead-letter growth', n_queues: '{n} queues', acknowledge: 'Acknowledge', snooze: 'Snooze 1 h',
    acked_by: 'acknowledged by {u}', snoozed_n: '{n} snoozed', acked_all: 'Every incident is acknowledged',
    ack_ok: 'Incident acknowledged.', snooze_ok: 'Incident snoozed for an hour.',
    col_job_id: 'Job id', col_select: 'Select', filter_level: 'Priority', level_n: 'P{n}', level_0: 'P0 (urgent)', level_1: 'P1 (normal)', level_2: 'P2 (low)',
    range_custom: 'Custom', range_from: 'From', range_to: 'To', runs_at: 'runs {t}', select_all: 'Select all',
    selected_n: '{n} selected', bulk_on_selection: 'Selected:', bulk_all: 'All matching this filter:',
    promote: 'Run now', delete_job: 'Delete', bulk_retry: 'Retry', bulk_cancel: 'Cancel', bulk_promote: 'Run now', bulk_delete: 'Delete',
    bulk_title: '{a} — {n} job(s)', bulk_count_note: 'The jobs matching now; the run never touches more than this.',
    bulk_over: 'Too many jobs: one bulk action takes at most {n}.', bulk_running: '{a}: {d} of {n}',
    bulk_done: '{a} done: {d} done, {f} failed, {s} skipped', bulk_nothing: 'No job matches.',
    confirm_promote_job: 'Put this delayed job in its queue now.', promote_ok: 'The job will run now.',
    confirm_delete_job: 'Delete this job and its record. This cannot be undone.', delete_ok: 'The job was deleted.',
    f_level: 'Priority', f_run_at: 'Runs at', f_enqueued: 'Enqueued',
    col_schedule: 'Schedule', col_cron: 'When', col_next_run: 'Next run', col_last_runs: 'Last runs', col_actions: 'Actions',
    sched_active: 'Active', sched_paused: 'Paused', new_schedule: 'New schedule', edit: 'Edit', run_now: 'Run now',
    no_schedules: 'No schedules yet.', schedules_count: '{n} schedules', sched_queue: 'Queue', sched_name: 'Name', sched_cron: 'Cron (5 or 6 fields, @daily, @every 5m)',
    sched_tz: 'Time zone', sched_job_name: 'Job name (default: the schedule name)', sched_data: 'Data (JSON)', sched_priority: 'Priority (1 = most urgent)',
    save: 'Save', sched_saved: 'Schedule saved.', sched_paused_ok: 'Schedule paused.', sched_resumed_ok: 'Schedule resumed.',
    sched_triggered_ok: 'Job started: {id}', sched_deleted_ok: 'Schedule deleted.', confirm_delete_schedule: 'Delete the schedule {s}.',
    confirm_trigger: 'Run the job of {s} once, now.', bad_json: 'The data is not valid JSON.', runs_none: 'no runs yet',
    col_time: 'Time', col_actor: 'Actor', col_action: 'Action', col_entity: 'On', col_outcome: 'Outcome', col_reason: 'Reason',
    outcome_ok: 'OK', outcome_failed: 'Failed', outcome_refused: 'Refused', filter_actor: 'Actor', filter_action: 'Action',
    filter_outcome: 'Outcome', no_audit: 'No records match these filters.', load_older: 'Load older records',
    pause_reason: 'Reason (kept in the audit log, optional)', window_1h: '1 h', window_24h: '24 h', window_7d: '7 d',
    history_title: 'Completed and failed per hour', waiting_levels: 'P0 {a} · P1 {b} · P2 {c}',
  },
};

const KEY = 'jq-monitor-lang';
let lang = pick();

function pick() {
  try {
    const saved = localStorage.getItem(KEY);
    if (saved === 'ko' || saved === 'en') return saved;
  } catch { /* storage may be off */ }
  const nav = (navigator.languages && navigator.languages[0]) || navigator.language || 'ko';
  return nav.toLowerCase().startsWith('ko') ? 'ko' : 'en';
}

export function getLang() {
  return lang;
}

export function setLang(value) {
  lang = value === 'en' ? 'en' : 'ko';
  try { localStorage.setItem(KEY, lang); } catch { /* ignore */ }
  document.documentElement.lang = lang;
}

/** t('key', {n: 3}) → the string in the current language with {n} filled in. */
export function t(key, vars) {
  const table = STRINGS[lang];
  let out = table[key] ?? STRINGS.en[key] ?? key;
  if (vars) for (const [k, v] of Object.entries(vars)) out = out.replaceAll(`{${k}}`, String(v));
  return out;
}

/** Pick the current language from a {ko, en} object (the API's summaries and messages). */
export function pickLang(obj) {
  if (!obj) return '';
  return obj[lang] ?? obj.en ?? obj.ko ?? '';
}

const locale = () => (lang === 'ko' ? 'ko-KR' : 'en-GB');

export function num(n) {
  if (n === null || n === undefined) return '–';
  return new Intl.NumberFormat(locale()).format(n);
}

export function pct(n) {
  if (n === null || n === undefined) return '–';
  return `${new Intl.NumberFormat(locale(), { maximumFractionDigits: 1 }).format(n)}%`;
}

/** 850 → "850 ms", 1234 → "1.2 s", 95000 → "1 min 35 s". */
export function duration(ms) {
  if (ms === null || ms === undefined) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const sec = ms / 1000;
  if (sec < 60) return `${sec < 10 ? sec.toFixed(1) : Math.round(sec)} s`;
  return span(sec);
}

/** Seconds → "3 h 5 min", "2 d 4 h" (Korean: "3시간 5분"). */
export function span(sec) {
  if (sec === null || sec === undefined) return '–';
  const u = lang === 'ko' ? { d: '일', h: '시간', m: '분', s: '초' } : { d: ' d', h: ' h', m: ' min', s: ' s' };
  sec = Math.max(0, Math.round(sec));
  const d = Math.floor(sec / 86400), hr = Math.floor((sec % 86400) / 3600), m = Math.floor((sec % 3600) / 60), s = sec % 60;
  if (d) return `${d}${u.d}${hr ? ' ' + hr + u.h : ''}`;
  if (hr) return `${hr}${u.h}${m ? ' ' + m + u.m : ''}`;
  if (m) return `${m}${u.m}${s && m < 10 ? ' ' + s + u.s : ''}`;
  return `${s}${u.s}`;
}

/** "3분 전" / "3 min ago". */
export function ago(iso) {
  if (!iso) return '–';
  const diff = (new Date(iso).getTime() - Date.now()) / 1000;
  const rtf = new Intl.RelativeTimeFormat(locale(), { numeric: 'auto', style: 'short' });
  const a = Math.abs(diff);
  if (a < 45) return rtf.format(Math.round(diff), 'second');
  if (a < 2700) return rtf.format(Math.round(diff / 60), 'minute');
  if (a < 64800) return rtf.format(Math.round(diff / 3600), 'hour');
  return rtf.format(Math.round(diff / 86400), 'day');
}

/** Absolute local time for titles and the drawer. */
export function when(iso) {
  if (!iso) return '–';
  return new Intl.DateTimeFormat(locale(), { dateStyle: 'medium', timeStyle: 'medium' }).format(new Date(iso));
}

export function clock(iso) {
  if (!iso) return '–';
  return new Intl.DateTimeFormat(locale(), { hour: '2-digit', minute: '2-digit', second: '2-digit' }).format(new Date(iso));
}

export function bytes(n) {
  if (n === null || n === undefined) return '';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** The queue's label in the current language (Korean label from the catalog, English fallback). */
export function queueLabel(q) {
  if (!q) return '';
  return (lang === 'ko' ? q.display_name : q.display_name_en) || q.display_name || q.name;
}
