"""The desk's own words in Chinese and English, and how a page picks its language.

Option labels, codes and reasons come from the policy file (``[codes.*]``),
so an operator renames them without a release; only the desk's fixed
vocabulary — headings, buttons, state names, messages — lives here.
"""
from __future__ import annotations

from flask import Request

#: The languages of the desk; the first is the default when the browser prefers neither.
LANGUAGES: tuple[str, ...] = ("zh", "en")
#: The cookie remembering the agent's choice of language (not sensitive).
LANG_COOKIE = "desk_lang"

#: Ticket states (SPEC §3) as agents call them.
STATE_LABELS: dict[str, dict[str, str]] = {
    "negotiating": {"zh": "协商中", "en": "Negotiating"},
    "awaiting_confirmation": {"zh": "待用户确认", "en": "Awaiting buyer confirmation"},
    "intercepting": {"zh": "物流拦截中", "en": "Logistics interception"},
    "awaiting_takeover": {"zh": "待客服接入", "en": "Awaiting takeover"},
    "stage1": {"zh": "待客服处理", "en": "Stage 1 · dispute status"},
    "awaiting_evidence": {"zh": "等待补充凭证", "en": "Awaiting evidence"},
    "stage2": {"zh": "二次补充凭证", "en": "Stage 2 · evidence review"},
    "stage3": {"zh": "判责", "en": "Stage 3 · judgment"},
    "stage4": {"zh": "核实赔付", "en": "Stage 4 · verify compensation"},
    "awaiting_payment": {"zh": "等待付款", "en": "Awaiting payment"},
    "resolved": {"zh": "协商解决", "en": "Resolved"},
    "closed": {"zh": "已结案", "en": "Closed"},
    "withdrawn": {"zh": "已撤诉", "en": "Withdrawn"},
}

#: Dispute types of ``complaint.submitted`` (SPEC §4).
DISPUTE_TYPES: dict[str, dict[str, str]] = {
    "quality": {"zh": "质量问题", "en": "Quality"},
    "not_as_described": {"zh": "描述不符", "en": "Not as described"},
    "logistics": {"zh": "物流问题", "en": "Logistics"},
    "cancel_order": {"zh": "取消订单", "en": "Cancel order"},
    "after_sales": {"zh": "售后问题", "en": "After-sales"},
    "missing_gift": {"zh": "赠品缺失", "en": "Missing gift"},
    "contract": {"zh": "合约问题", "en": "Contract"},
    "platform_policy": {"zh": "平台规则", "en": "Platform policy"},
    "other": {"zh": "其他", "en": "Other"},
}

#: Actions that are not option buttons (intake messages, deadlines, claims), for the history.
ACTION_LABELS: dict[str, dict[str, str]] = {
    "submit": {"zh": "投诉提交", "en": "Complaint submitted"},
    "link_complaint": {"zh": "关联投诉", "en": "Complaint linked"},
    "take_over": {"zh": "客服接手", "en": "Taken over"},
    "claim": {"zh": "领取", "en": "Claimed"},
    "submit_evidence": {"zh": "提交凭证", "en": "Evidence submitted"},
    "evidence_deadline": {"zh": "凭证期限届满", "en": "Evidence deadline passed"},
    "platform_judgment": {"zh": "商家申请平台判责", "en": "Merchant asked for judgment"},
    "direct_refund": {"zh": "商家直接退款", "en": "Merchant refunded"},
    "negotiated_reject": {"zh": "协商驳回", "en": "Negotiated rejection"},
    "intercept_48h": {"zh": "48小时物流拦截", "en": "48 h interception"},
    "merchant_response_deadline": {"zh": "商家超时未响应", "en": "Merchant did not answer"},
    "accept_settlement": {"zh": "用户接受方案", "en": "Buyer accepted"},
    "decline_settlement": {"zh": "用户拒绝方案", "en": "Buyer declined"},
    "customer_confirmation_deadline": {"zh": "用户确认超时", "en": "Buyer confirmation deadline"},
    "upload_voucher": {"zh": "商家上传凭证", "en": "Voucher uploaded"},
    "return_goods": {"zh": "用户退货", "en": "Goods returned"},
    "payment_voucher_deadline": {"zh": "付款期限届满", "en": "Payment deadline passed"},
    "approve_payment": {"zh": "主管批准", "en": "Supervisor approved"},
    "decline_payment": {"zh": "主管拒绝", "en": "Supervisor declined"},
    "appeal": {"zh": "申诉", "en": "Appeal"},
    "withdraw": {"zh": "用户撤诉", "en": "Withdrawn"},
}

#: The desk's fixed vocabulary.
WORDS: dict[str, dict[str, str]] = {
    "desk": {"zh": "客服工作台", "en": "Agent desk"},
    "dashboard": {"zh": "主管看板", "en": "Supervisor dashboard"},
    "sign_in": {"zh": "登录", "en": "Sign in"},
    "sign_out": {"zh": "退出", "en": "Sign out"},
    "token": {"zh": "访问令牌", "en": "Access token"},
    "token_hint": {"zh": "由 disputes agents add 签发", "en": "issued by disputes agents add"},
    "bad_token": {"zh": "令牌无效或已撤销", "en": "Unknown or revoked token"},
    "signed_out": {"zh": "已退出", "en": "You are signed out"},
    "session_ended": {"zh": "会话已失效，请重新登录", "en": "Your session ended: sign in again"},
    "forged": {"zh": "表单已过期或来自其他网站，请重新操作",
               "en": "This form expired or came from another site: try again"},
    "my_queue": {"zh": "我的工单", "en": "My queue"},
    "claim_next": {"zh": "领取下一单", "en": "Claim next"},
    "claimed": {"zh": "已领取工单", "en": "Ticket claimed"},
    "nothing_waiting": {"zh": "本环节暂无待领取工单，或已达到处理上限",
                        "en": "Nothing is waiting for your stage, or you are at capacity"},
    "waiting_in_stage": {"zh": "本环节待领取", "en": "Waiting in my stage"},
    "load": {"zh": "负载", "en": "Load"},
    "empty_queue": {"zh": "暂无分配给你的工单", "en": "No ticket is assigned to you"},
    "ticket": {"zh": "工单", "en": "Ticket"},
    "state": {"zh": "状态", "en": "State"},
    "version": {"zh": "版本", "en": "Version"},
    "assignee": {"zh": "处理人", "en": "Assignee"},
    "unassigned": {"zh": "未分配", "en": "unassigned"},
    "waiting_on": {"zh": "等待方", "en": "Waiting on"},
    "due": {"zh": "截止", "en": "Due"},
    "overdue": {"zh": "已超时", "en": "overdue"},
    "complaint": {"zh": "投诉内容", "en": "The complaint"},
    "dispute_type": {"zh": "纠纷类型", "en": "Dispute type"},
    "category": {"zh": "商品类目", "en": "Category"},
    "channel": {"zh": "渠道", "en": "Channel"},
    "order": {"zh": "订单", "en": "Order"},
    "order_amount": {"zh": "订单金额", "en": "Order amount"},
    "claimed_amount": {"zh": "申请金额", "en": "Claimed"},
    "refund_amount": {"zh": "应退金额", "en": "Refund owed"},
    "refunded_amount": {"zh": "已退金额", "en": "Refunded"},
    "complaint_fee": {"zh": "客诉费", "en": "Complaint fee"},
    "description": {"zh": "描述", "en": "Description"},
    "parties": {"zh": "双方", "en": "Parties"},
    "buyer": {"zh": "用户", "en": "Buyer"},
    "merchant": {"zh": "商家", "en": "Merchant"},
    "dispute_status": {"zh": "纠纷现状", "en": "Dispute status"},
    "liability": {"zh": "责任方", "en": "Liability"},
    "remedy": {"zh": "处理方式", "en": "Remedy"},
    "evidence_rounds": {"zh": "补充凭证轮次", "en": "Evidence rounds"},
    "complexity": {"zh": "复杂度", "en": "Complexity"},
    "negotiation": {"zh": "协商结果", "en": "Negotiation"},
    "sla": {"zh": "服务时效", "en": "Service levels"},
    "accept_due": {"zh": "接入时限", "en": "Accept by"},
    "first_feedback_due": {"zh": "首次反馈时限", "en": "First feedback by"},
    "resolve_due": {"zh": "解决时限", "en": "Resolve by"},
    "breaches": {"zh": "已违约", "en": "Breached"},
    "none": {"zh": "无", "en": "none"},
    "evidence": {"zh": "凭证", "en": "Evidence"},
    "no_evidence": {"zh": "暂无凭证", "en": "No evidence yet"},
    "party": {"zh": "提交方", "en": "Party"},
    "round": {"zh": "轮次", "en": "Round"},
    "kind": {"zh": "类型", "en": "Kind"},
    "link": {"zh": "链接", "en": "Link"},
    "note": {"zh": "备注", "en": "Note"},
    "submitted_at": {"zh": "提交时间", "en": "Submitted"},
    "evidence_requests": {"zh": "补充凭证请求", "en": "Evidence requests"},
    "fulfilled": {"zh": "已提交", "en": "Fulfilled"},
    "pending": {"zh": "未提交", "en": "pending"},
    "history": {"zh": "处理记录", "en": "History"},
    "at": {"zh": "时间", "en": "At"},
    "actor": {"zh": "操作方", "en": "Actor"},
    "action": {"zh": "操作", "en": "Action"},
    "change": {"zh": "状态变化", "en": "Change"},
    "details": {"zh": "详情", "en": "Details"},
    "qc": {"zh": "质检", "en": "QC"},
    "payment": {"zh": "赔付", "en": "Payment"},
    "waiting_for": {"zh": "等待", "en": "Waiting for"},
    "voucher": {"zh": "付款凭证", "en": "Voucher"},
    "issue": {"zh": "问题", "en": "Issue"},
    "pending_approval": {"zh": "待主管审批", "en": "Awaiting approval"},
    "requested_by": {"zh": "申请人", "en": "Requested by"},
    "approve": {"zh": "批准", "en": "Approve"},
    "decline": {"zh": "拒绝", "en": "Decline"},
    "decide": {"zh": "处理决定", "en": "Decision"},
    "qc_previous": {"zh": "质检上一环节", "en": "QC of the previous stage"},
    "qc_ok": {"zh": "合格", "en": "OK"},
    "qc_flag": {"zh": "标记问题", "en": "Flag"},
    "qc_reason": {"zh": "质检原因", "en": "Reason"},
    "choose": {"zh": "请选择", "en": "choose"},
    "amount_hint": {"zh": "金额", "en": "amount"},
    "not_your_stage": {"zh": "此工单不在你的环节", "en": "This ticket is not in your stage"},
    "claim_first": {"zh": "此工单尚未分配：在我的工单页领取", "en": "Unassigned: claim it from your queue"},
    "not_yours": {"zh": "此工单已分配给其他客服", "en": "Another agent holds this ticket"},
    "hidden_state": {"zh": "工单正在等待外部方，暂无可选操作",
                     "en": "The ticket waits on someone outside the floor: nothing to decide now"},
    "accepted": {"zh": "已提交，处理中……", "en": "Decision accepted; the stage worker is applying it"},
    "applying": {"zh": "正在处理你的决定……", "en": "Your decision is being applied…"},
    "refused": {"zh": "上一个决定未生效", "en": "Your last decision was refused"},
    "moved": {"zh": "工单已被他人更新，请刷新后重试", "en": "Someone else moved this ticket — reload"},
    "reload": {"zh": "刷新", "en": "Reload"},
    "forbidden": {"zh": "无权操作", "en": "Not allowed"},
    "not_configured": {"zh": "请检查标出的选项", "en": "Check the marked options"},
    "conflict": {"zh": "当前状态不允许此操作", "en": "Not possible in the ticket's current state"},
    "back_to_queue": {"zh": "返回我的工单", "en": "Back to my queue"},
    "not_found": {"zh": "未找到", "en": "Not found"},
    "error": {"zh": "出错了", "en": "Something went wrong"},
    "supervisors_only": {"zh": "仅限主管", "en": "Supervisors only"},
    "backlog": {"zh": "积压（按环节与状态）", "en": "Backlog by stage and state"},
    "stage": {"zh": "环节", "en": "Stage"},
    "open": {"zh": "未结", "en": "Open"},
    "waiting": {"zh": "待领取", "en": "Unclaimed"},
    "hidden": {"zh": "等待外部", "en": "Waiting outside the floor"},
    "oldest": {"zh": "最久等待", "en": "Oldest waiting"},
    "age": {"zh": "已等待", "en": "Waiting for"},
    "sla_breaches": {"zh": "时效违约", "en": "SLA breaches"},
    "accept": {"zh": "接入", "en": "Accept"},
    "resolve": {"zh": "解决", "en": "Resolve"},
    "first_feedback": {"zh": "首次反馈", "en": "First feedback"},
    "throughput": {"zh": "每小时处理量（近 24 小时）", "en": "Throughput per hour (last 24 h)"},
    "hour": {"zh": "小时", "en": "Hour"},
    "plan_tomorrow": {"zh": "明日排班建议", "en": "Tomorrow's plan"},
    "plan_note": {"zh": "高峰所需人数（Erlang C，按近四周实测）；`disputes plan` 查看逐小时明细",
                  "en": "Peak agents needed (Erlang C on the last four weeks' measurements); `disputes plan` shows every hour"},
    "plan_computing": {"zh": "正在计算明日排班…", "en": "Making tomorrow's plan…"},
    "plan_refused": {"zh": "数据不足，无法排班：", "en": "Too little data to plan from:"},
    "present_now": {"zh": "当前在线", "en": "Present now"},
    "roster": {"zh": "在册", "en": "On the roster"},
    "peak_need": {"zh": "明日高峰所需", "en": "Needed at tomorrow's peak"},
    "peak_at": {"zh": "高峰时段", "en": "Peak hour"},
    "plan_target": {"zh": "目标", "en": "Target"},
    "decisions": {"zh": "客服决定", "en": "Agent decisions"},
    "to_floor": {"zh": "进入客服", "en": "Reached the floor"},
    "closed": {"zh": "结案", "en": "Closed"},
    "agents": {"zh": "客服", "en": "Agents"},
    "name": {"zh": "姓名", "en": "Name"},
    "capacity": {"zh": "上限", "en": "Capacity"},
    "qc_flags": {"zh": "质检问题 / 被质检", "en": "QC flags / verdicts"},
    "qc_verdicts": {"zh": "被质检", "en": "QC verdicts"},
    "satisfaction": {"zh": "满意度", "en": "Satisfaction"},
    "surveys": {"zh": "问卷", "en": "surveys"},
    "updated": {"zh": "更新于", "en": "Updated"},
    "refresh_note": {"zh": "每 10 秒自动刷新", "en": "Refreshes every 10 s"},
    "supervisor": {"zh": "主管", "en": "supervisor"},
    "in_hours": {"zh": "后", "en": "in"},
    "option_of": {"zh": "协商选项", "en": "Option"},
    "about": {"zh": "针对", "en": "about"},
    "param_dispute_status": {"zh": "纠纷现状", "en": "Dispute status"},
    "param_category": {"zh": "商品类目", "en": "Product category"},
    "param_from": {"zh": "请求对象", "en": "Request from"},
    "param_items": {"zh": "凭证类型", "en": "Evidence kinds"},
    "param_liability": {"zh": "责任方", "en": "Liability"},
    "param_remedy": {"zh": "处理方式", "en": "Remedy"},
    "param_amount": {"zh": "金额", "en": "Amount"},
    "param_reason_code": {"zh": "原因", "en": "Reason"},
    "accepted_at": {"zh": "接入于", "en": "Accepted at"},
    "stopped_seconds": {"zh": "时效暂停累计", "en": "Clock stopped for"},
    "paused": {"zh": "时效暂停中", "en": "Clock paused"},
    "priority": {"zh": "优先级", "en": "Priority"},
    "yes": {"zh": "是", "en": "yes"},
    "no": {"zh": "否", "en": "no"},
    "resolved_at": {"zh": "解决于", "en": "Resolved at"},
    "no_agent_alarm": {"zh": "无可用客服！", "en": "No eligible agent!"},
    "amount_for_partial": {"zh": "部分退款时填写", "en": "for a partial refund"},
}


def choose_language(request: Request) -> str:
    """The agent's choice (cookie), else the browser's preference, else Chinese."""
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    return request.accept_languages.best_match(LANGUAGES) or LANGUAGES[0]


def word(key: str, lang: str) -> str:
    """One word of the desk's vocabulary (the key itself when missing, so a gap shows, not breaks)."""
    entry = WORDS.get(key)
    return entry.get(lang, key) if entry else key


def label(value: object, lang: str) -> str:
    """A policy label ``{"zh": …, "en": …}`` in `lang` (any other value as text)."""
    if isinstance(value, dict):
        return str(value.get(lang) or next(iter(value.values()), ""))
    return "" if value is None else str(value)
